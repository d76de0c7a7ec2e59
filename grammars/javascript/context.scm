; Context queries for JavaScript and JSX (tree-sitter-javascript 0.25).
; Captures: @import, @scope, @definition.callable + @name, @definition.type + @name,
; @reference. See grammars/README.md.

; --- @import: whole import statements
(import_statement) @import

; --- @scope: blocks whose header (node start up to its `body`) says where the cursor is
; (arrow functions and function expressions are left out)
(class_declaration body: (_)) @scope
(class body: (_)) @scope
(function_declaration body: (_)) @scope
(generator_function_declaration body: (_)) @scope
(method_definition body: (_)) @scope

; --- @definition.callable: functions and methods
(function_declaration name: (identifier) @name) @definition.callable
(generator_function_declaration name: (identifier) @name) @definition.callable
(method_definition name: [(property_identifier) (private_property_identifier)] @name) @definition.callable

; --- @definition.callable: functions bound to a name: const f = () => …, const f = function () …
; (the variable_declarator is captured, not the whole const/let/var statement)
(variable_declarator name: (identifier) @name value: (arrow_function)) @definition.callable
(variable_declarator name: (identifier) @name value: (function_expression)) @definition.callable
(variable_declarator name: (identifier) @name value: (generator_function)) @definition.callable

; --- @definition.type: classes
(class_declaration name: (identifier) @name) @definition.type

; --- @reference: callee names: foo(), a.foo()
(call_expression function: (identifier) @reference)
(call_expression function: (member_expression property: (property_identifier) @reference))

; --- @reference: constructor calls: new Foo(), new a.Foo()
(new_expression constructor: (identifier) @reference)
(new_expression constructor: (member_expression property: (property_identifier) @reference))

; --- @reference: base classes: class A extends B, class A extends ns.B
(class_heritage (identifier) @reference)
(class_heritage (member_expression property: (property_identifier) @reference))

; --- @reference: JSX components: <Foo …>, <Foo/> (also matches HTML tags such as div)
(jsx_opening_element name: (identifier) @reference)
(jsx_self_closing_element name: (identifier) @reference)
