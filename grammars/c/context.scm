; Context queries for C (tree-sitter-c 0.24).
; Captures: @import, @scope, @definition.callable + @name, @definition.type + @name,
; @reference. See grammars/README.md.

; --- @import: #include lines
(preproc_include) @import

; --- @scope: blocks whose header (node start up to its `body`) says where the cursor is
(function_definition body: (_)) @scope
(struct_specifier body: (_)) @scope
(union_specifier body: (_)) @scope

; --- @definition.callable: function definitions: f(…) {…}, *f(…) {…}, **f(…) {…}
(function_definition
  declarator: (function_declarator declarator: (identifier) @name)) @definition.callable
(function_definition
  declarator: (pointer_declarator
    declarator: (function_declarator declarator: (identifier) @name))) @definition.callable
(function_definition
  declarator: (pointer_declarator
    declarator: (pointer_declarator
      declarator: (function_declarator declarator: (identifier) @name)))) @definition.callable

; --- @definition.callable: prototypes: f(…);, *f(…);, **f(…);
; (any declaration, not only top-level ones, so headers' include guards and
; block-scope prototypes are covered; function-pointer variables do not match)
(declaration
  declarator: (function_declarator declarator: (identifier) @name)) @definition.callable
(declaration
  declarator: (pointer_declarator
    declarator: (function_declarator declarator: (identifier) @name))) @definition.callable
(declaration
  declarator: (pointer_declarator
    declarator: (pointer_declarator
      declarator: (function_declarator declarator: (identifier) @name)))) @definition.callable

; --- @definition.type: struct/union/enum with a body, typedef names
(struct_specifier name: (type_identifier) @name body: (_)) @definition.type
(union_specifier name: (type_identifier) @name body: (_)) @definition.type
(enum_specifier name: (type_identifier) @name body: (_)) @definition.type
(type_definition declarator: (type_identifier) @name) @definition.type

; --- @reference: callee names: foo(), a.foo(), a->foo()
(call_expression function: (identifier) @reference)
(call_expression function: (field_expression field: (field_identifier) @reference))

; --- @reference: type names anywhere (also matches the name at a type's own definition)
(type_identifier) @reference
