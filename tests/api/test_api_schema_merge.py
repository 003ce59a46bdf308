"""The schema merge convention: explicit area list, missing areas skipped, clashes and broken areas loud."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import strawberry

from api.areas import import_areas
from api.schema import AREAS, build_schema, merge_root, schema


@pytest.fixture
def fake_areas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway package of area modules on sys.path (the loader is what is under test)."""
    package = tmp_path / "fake_areas"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text("VALUE = 1\n")
    (package / "broken.py").write_text("import module_that_does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fake_areas"
    for name in [n for n in sys.modules if n.startswith("fake_areas")]:
        del sys.modules[name]


def test_missing_area_is_skipped_but_a_broken_one_raises(fake_areas: str) -> None:
    modules = import_areas(fake_areas, ("good", "not_written_yet"))
    assert [m.__name__ for m in modules] == ["fake_areas.good"]
    with pytest.raises(ModuleNotFoundError, match="module_that_does_not_exist_anywhere"):
        import_areas(fake_areas, ("broken",))


def test_a_field_claimed_by_two_areas_is_an_error() -> None:
    @strawberry.type
    class First:
        @strawberry.field
        def thing(self) -> int:
            return 1

    @strawberry.type
    class Second:
        @strawberry.field
        def thing(self) -> int:
            return 2

    with pytest.raises(TypeError, match="thing"):
        merge_root("Query", (First, Second))
    assert merge_root("Mutation", ()) is None


def test_served_schema_has_the_contract_fields() -> None:
    query = schema.get_type_by_name("Query")
    mutation = schema.get_type_by_name("Mutation")
    assert {"search", "listing", "listings", "categories", "me"} <= {f.python_name for f in query.fields}
    assert {"create_listing", "update_listing", "delete_listing", "add_review"} <= {
        f.python_name for f in mutation.fields
    }
    search_input = schema.get_type_by_name("SearchInput")
    assert {f.python_name for f in search_input.fields} >= {
        "text", "category", "subcategory", "kinds", "input_format", "output_format", "max_latency_ms",
        "min_accuracy", "resources", "verified_only", "sort", "limit", "after",
    }  # fmt: skip
    assert build_schema(("listings",)).get_type_by_name("Query") is not None
    assert AREAS[:2] == ("listings", "search")
