; Context queries for Python (tree-sitter-python 0.25).
; Captures: @import, @scope, @definition.callable + @name, @definition.type + @name,
; @reference. See grammars/README.md.

; --- @import: whole import statements
(import_statement) @import
(import_from_statement) @import
(future_import_statement) @import

; --- @scope: blocks whose header (node start up to its `body`) says where the cursor is
; (lambdas are left out; a decorated definition's node starts at `def`/`class`)
(class_definition body: (_)) @scope
(function_definition body: (_)) @scope

; --- @definition.callable: functions and methods
(function_definition name: (identifier) @name) @definition.callable

; --- @definition.type: classes
(class_definition name: (identifier) @name) @definition.type

; --- @reference: callee names (classes are called too): foo(), a.foo()
(call function: (identifier) @reference)
(call function: (attribute attribute: (identifier) @reference))

; --- @reference: names in type annotations: x: Foo, x: List[Foo], x: mod.Foo
(type (identifier) @reference)
(type (attribute attribute: (identifier) @reference))
(generic_type (identifier) @reference)

; --- @reference: base classes: class A(Base), class A(mod.Base)
(class_definition superclasses: (argument_list (identifier) @reference))
(class_definition superclasses: (argument_list (attribute attribute: (identifier) @reference)))
