"""Limits on what one GraphQL operation may ask for at once, checked before anything runs.

The document limits (depth, aliases, tokens: ``api.schema``) bound the document's size, not its cost: 50
aliased ``search`` fields fit in them, and each is a query encode plus a ranking pass. One such request
(50 searches of 990 characters, 100 results each) kept the server's CPU busy for 8.4 s on 2 cores, where
the same search alone takes ~0.1-0.2 s: one request was worth fifty to any per-request rate limit.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import AddValidationRules

# Root fields whose every occurrence is costly work, and how many of each one operation may hold.
COSTLY_ROOT_FIELDS: dict[str, int] = {"search": 5}


def root_fields(
    context: ValidationContext, selections: SelectionSetNode, seen: set[str]
) -> Iterator[tuple[str, str]]:
    """(response key, field name) of each root field an operation's selection set selects, through
    its fragments. Fields under one response key merge into one execution, so callers count keys."""
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            yield (selection.alias or selection.name).value, selection.name.value
        elif isinstance(selection, InlineFragmentNode):
            yield from root_fields(context, selection.selection_set, seen)
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            seen.add(selection.name.value)
            fragment = context.get_fragment(selection.name.value)
            if fragment is not None:
                yield from root_fields(context, fragment.selection_set, seen)


class CostlyFieldsRule(ValidationRule):
    """At most ``COSTLY_ROOT_FIELDS[name]`` occurrences of each costly root field per operation."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: object) -> None:
        executed = set(root_fields(self.context, node.selection_set, set()))
        for field, most in COSTLY_ROOT_FIELDS.items():
            count = sum(1 for _key, name in executed if name == field)
            if count > most:
                self.report_error(
                    GraphQLError(
                        f"{count} '{field}' fields in one operation; at most {most} are allowed "
                        "(send the others in requests of their own)",
                        node,
                    )
                )


class CostlyFieldsLimiter(AddValidationRules):
    def __init__(self) -> None:
        super().__init__([CostlyFieldsRule])
