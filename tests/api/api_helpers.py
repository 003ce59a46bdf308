"""Helpers shared by the API tests (imported by module name: tests/ is not a package)."""

from __future__ import annotations

from typing import Any

# Every scalar and nested field of ``Listing``: asking for all of them checks that each one resolves.
LISTING_FIELDS = """
    id kind name category subcategories description documentation framework tags license
    inputFormat inputSchema outputFormat outputSchema
    resources { cpu memoryMb gpu } trainingResources { cpu memoryMb gpu } timeoutS
    accuracy { value metric dataset } latencyP50Ms latencyP95Ms sizeBytes storageLocation examples extra
    producer { id name } version visibility sharedWith verificationStatus status
    usageCount successRate relativeUsage createdAt updatedAt
    rating { average count } reviews { id author rating text createdAt }
    versions { id version artifactKind artifactDigest imageRef encrypted notes createdAt }
"""

CREATE = f"mutation($input: CreateListingInput!) {{ createListing(input: $input) {{ {LISTING_FIELDS} }} }}"


def listing_input(name: str = "sentiment-model", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "kind": "MODEL",
        "category": "Natural Language Processing",
        "subcategories": ["Text Classification"],
        "description": "Classifies the sentiment of short English texts as positive or negative.",
        "tags": ["sentiment", "reviews"],
        "accuracy": 0.91,
        "accuracyMetric": "accuracy",
        "accuracyDataset": "sst2",
        "latencyP50Ms": 12.0,
        "inputFormat": "text",
        "outputFormat": "class-label",
        "resources": {"cpu": 1, "memoryMb": 512, "gpu": 0},
    }
    if "subcategory" in overrides:
        data["subcategories"] = [overrides.pop("subcategory")]
    data.update(overrides)
    return data


async def new_listing(
    api, token: str, name: str = "sentiment-model", expect_error: bool = False, **overrides
):
    """Create a listing through the API; returns ``data`` (or the error code when ``expect_error``)."""
    variables = {"input": listing_input(name, **overrides)}
    if expect_error:
        return await api.error_code(CREATE, variables, token)
    return await api.data(CREATE, variables, token)
