"""Per-area GraphQL modules; each exports ``Query``/``Mutation`` (and optionally ``Subscription``).

``api.schema.AREAS`` lists them. Shared output types (``Listing`` and friends) live in
``api.graphql.types`` so areas can return listings without importing each other.
"""
