; Context queries for TypeScript and TSX (tree-sitter-typescript 0.23). This file is
; compiled against both grammars, so it uses only node kinds they share (no JSX).
; Captures: @import, @scope, @definition.callable + @name, @definition.type + @name,
; @reference. See grammars/README.md.

; --- @import: whole import statements
(import_statement) @import

; --- @scope: blocks whose header (node start up to its `body`) says where the cursor is
; (arrow functions and function expressions are left out)
(class_declaration body: (_)) @scope
(abstract_class_declaration body: (_)) @scope
(class body: (_)) @scope
(interface_declaration body: (_)) @scope
(function_declaration body: (_)) @scope
(generator_function_declaration body: (_)) @scope
(method_definition body: (_)) @scope
(module body: (_)) @scope
(internal_module body: (_)) @scope

; --- @definition.callable: functions and methods
(function_declaration name: (identifier) @name) @definition.callable
(generator_function_declaration name: (identifier) @name) @definition.callable
(method_definition name: [(property_identifier) (private_property_identifier)] @name) @definition.callable

; --- @definition.callable: signatures without a body (interfaces, overloads, declare, abstract)
(function_signature name: (identifier) @name) @definition.callable
(method_signature name: [(property_identifier) (private_property_identifier)] @name) @definition.callable
(abstract_method_signature name: [(property_identifier) (private_property_identifier)] @name) @definition.callable

; --- @definition.callable: functions bound to a name: const f = () => …, const f = function () …
; (the variable_declarator is captured, not the whole const/let/var statement)
(variable_declarator name: (identifier) @name value: (arrow_function)) @definition.callable
(variable_declarator name: (identifier) @name value: (function_expression)) @definition.callable
(variable_declarator name: (identifier) @name value: (generator_function)) @definition.callable

; --- @definition.type: classes, interfaces, type aliases, enums
(class_declaration name: (type_identifier) @name) @definition.type
(abstract_class_declaration name: (type_identifier) @name) @definition.type
(interface_declaration name: (type_identifier) @name) @definition.type
(type_alias_declaration name: (type_identifier) @name) @definition.type
(enum_declaration name: (identifier) @name) @definition.type

; --- @reference: callee names: foo(), a.foo()
(call_expression function: (identifier) @reference)
(call_expression function: (member_expression property: (property_identifier) @reference))

; --- @reference: constructor calls: new Foo(), new a.Foo()
(new_expression constructor: (identifier) @reference)
(new_expression constructor: (member_expression property: (property_identifier) @reference))

; --- @reference: base classes: class A extends B, class A extends ns.B (implements
; lists hold type_identifiers, caught below)
(extends_clause value: (identifier) @reference)
(extends_clause value: (member_expression property: (property_identifier) @reference))

; --- @reference: type names anywhere (also matches the name at a type's own definition)
(type_identifier) @reference
