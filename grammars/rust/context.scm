; Context queries for Rust (tree-sitter-rust 0.24).
; Captures: @import, @scope, @definition.callable + @name, @definition.type + @name,
; @reference. See grammars/README.md.

; --- @import: whole import statements
(use_declaration) @import
(extern_crate_declaration) @import

; --- @scope: blocks whose header (node start up to its `body`) says where the cursor is
; (closures are left out)
(function_item body: (_)) @scope
(impl_item body: (_)) @scope
(trait_item body: (_)) @scope
(mod_item body: (_)) @scope

; --- @definition.callable: functions and methods (with a body, or a trait's signature)
(function_item name: (identifier) @name) @definition.callable
(function_signature_item name: (identifier) @name) @definition.callable

; --- @definition.type: named types
(struct_item name: (type_identifier) @name) @definition.type
(enum_item name: (type_identifier) @name) @definition.type
(union_item name: (type_identifier) @name) @definition.type
(trait_item name: (type_identifier) @name) @definition.type
(type_item name: (type_identifier) @name) @definition.type

; --- @reference: callee names: foo(), a.foo(), a::foo()
(call_expression function: (identifier) @reference)
(call_expression function: (field_expression field: (field_identifier) @reference))
(call_expression function: (scoped_identifier name: (identifier) @reference))

; --- @reference: callee names with turbofish: foo::<T>(), a.foo::<T>(), a::foo::<T>()
(call_expression function: (generic_function function: (identifier) @reference))
(call_expression function: (generic_function function: (field_expression field: (field_identifier) @reference)))
(call_expression function: (generic_function function: (scoped_identifier name: (identifier) @reference)))

; --- @reference: the type in an associated-function call: Foo::new(), a::Foo::new()
; (also catches module names such as `mem` in mem::swap(); they resolve to nothing)
(call_expression function: (scoped_identifier path: (identifier) @reference))
(call_expression function: (scoped_identifier path: (scoped_identifier name: (identifier) @reference)))

; --- @reference: type names anywhere (also matches the name at a type's own definition)
(type_identifier) @reference
