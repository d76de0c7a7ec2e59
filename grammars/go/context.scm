; Context queries for Go (tree-sitter-go 0.25).
; Captures: @import, @scope, @definition.callable + @name, @definition.type + @name,
; @reference. See grammars/README.md.

; --- @import: whole import declarations (single or grouped)
(import_declaration) @import

; --- @scope: blocks whose header (node start up to its `body`) says where the cursor is
; (function literals are left out)
(function_declaration body: (_)) @scope
(method_declaration body: (_)) @scope

; --- @definition.callable: functions, methods, interface methods (@name is a
; field_identifier for methods and interface methods)
(function_declaration name: (identifier) @name) @definition.callable
(method_declaration name: (field_identifier) @name) @definition.callable
(method_elem name: (field_identifier) @name) @definition.callable

; --- @definition.type: type specs inside `type …` / `type ( … )` (type_alias is `type A = B`)
(type_spec name: (type_identifier) @name) @definition.type
(type_alias name: (type_identifier) @name) @definition.type

; --- @reference: callee names: foo(), a.Foo(), pkg.Foo()
(call_expression function: (identifier) @reference)
(call_expression function: (selector_expression field: (field_identifier) @reference))

; --- @reference: type names anywhere (also matches the name at a type's own definition)
(type_identifier) @reference
