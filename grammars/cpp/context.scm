; Context queries for C++ (tree-sitter-cpp 0.23).
; Captures: @import, @scope, @definition.callable + @name, @definition.type + @name,
; @reference. See grammars/README.md.

; --- @import: #include lines
(preproc_include) @import

; --- @scope: blocks whose header (node start up to its `body`) says where the cursor is
; (lambdas are left out)
(function_definition body: (_)) @scope
(class_specifier body: (_)) @scope
(struct_specifier body: (_)) @scope
(union_specifier body: (_)) @scope
(namespace_definition body: (_)) @scope

; --- @definition.callable: function definitions, also in-class (field_identifier) and
; out-of-class ones (A::f, A::B::f, A::B::C::f: @name is the last segment, an identifier);
; plain f(…), returning a pointer *f(…) and returning a reference &f(…)
(function_definition
  declarator: (function_declarator
    declarator: [
      (identifier) @name
      (field_identifier) @name
      (qualified_identifier name: (identifier) @name)
      (qualified_identifier name: (qualified_identifier name: (identifier) @name))
      (qualified_identifier
        name: (qualified_identifier name: (qualified_identifier name: (identifier) @name)))
    ])) @definition.callable
(function_definition
  declarator: (pointer_declarator
    declarator: (function_declarator
      declarator: [
        (identifier) @name
        (field_identifier) @name
        (qualified_identifier name: (identifier) @name)
        (qualified_identifier name: (qualified_identifier name: (identifier) @name))
        (qualified_identifier
          name: (qualified_identifier name: (qualified_identifier name: (identifier) @name)))
      ]))) @definition.callable
(function_definition
  declarator: (reference_declarator
    (function_declarator
      declarator: [
        (identifier) @name
        (field_identifier) @name
        (qualified_identifier name: (identifier) @name)
        (qualified_identifier name: (qualified_identifier name: (identifier) @name))
        (qualified_identifier
          name: (qualified_identifier name: (qualified_identifier name: (identifier) @name)))
      ]))) @definition.callable

; --- @definition.callable: prototypes f(…);, *f(…);, &f(…); (also A::f) — only where a
; declaration cannot be a local variable: file level, namespace and extern "C" bodies,
; class bodies (constructors), preprocessor conditionals (include guards), templates.
; In a function body `T x(a);` parses the same way but is usually a variable.
(translation_unit
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(declaration_list
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(field_declaration_list
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(linkage_specification
  body: (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(template_declaration
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(preproc_ifdef
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(preproc_if
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(preproc_elif
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(preproc_elifdef
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)
(preproc_else
  (declaration
    declarator: [
      (function_declarator
        declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)])
      (pointer_declarator
        declarator: (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
      (reference_declarator
        (function_declarator
          declarator: [(identifier) @name (qualified_identifier name: (identifier) @name)]))
    ]) @definition.callable)

; --- @definition.callable: method declarations inside a class body: f(…);, *f(…);, &f(…);
(field_declaration
  declarator: (function_declarator declarator: (field_identifier) @name)) @definition.callable
(field_declaration
  declarator: (pointer_declarator
    declarator: (function_declarator declarator: (field_identifier) @name))) @definition.callable
(field_declaration
  declarator: (reference_declarator
    (function_declarator declarator: (field_identifier) @name))) @definition.callable

; --- @definition.type: class/struct/union/enum with a body, using-aliases, typedef names
(class_specifier name: (type_identifier) @name body: (_)) @definition.type
(struct_specifier name: (type_identifier) @name body: (_)) @definition.type
(union_specifier name: (type_identifier) @name body: (_)) @definition.type
(enum_specifier name: (type_identifier) @name body: (_)) @definition.type
(alias_declaration name: (type_identifier) @name) @definition.type
(type_definition declarator: (type_identifier) @name) @definition.type

; --- @reference: callee names: foo(), a.foo(), a->foo(), A::foo(), a::B::foo()
(call_expression function: (identifier) @reference)
(call_expression function: (field_expression field: (field_identifier) @reference))
(call_expression function: (qualified_identifier name: (identifier) @reference))
(call_expression function: (qualified_identifier name: (qualified_identifier name: (identifier) @reference)))
(call_expression
  function: (qualified_identifier
    name: (qualified_identifier name: (qualified_identifier name: (identifier) @reference))))

; --- @reference: callee names of template calls: foo<T>(), A::foo<T>(), a.foo<T>()
(call_expression function: (template_function name: (identifier) @reference))
(call_expression function: (qualified_identifier name: (template_function name: (identifier) @reference)))
(call_expression function: (field_expression field: (template_method name: (field_identifier) @reference)))

; --- @reference: type names anywhere, incl. new Foo(…) and Foo<T> (also matches the
; name at a type's own definition)
(type_identifier) @reference
