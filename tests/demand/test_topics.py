"""Grouping unmet searches into topics, and filtering the demand a producer reads."""

from __future__ import annotations

from datetime import timedelta

from demand_support import MovableClock, People

from catalog.demand import DemandService

# Phrasings not used to choose the threshold (benchmarks/demand_grouping.py has its own set). Some
# share almost no words with the rest of their need ("which subscribers are likely to cancel").
NEEDS = {
    "background removal": [
        "remove the background from product photos",
        "background removal for e-commerce images",
        "cut out objects from pictures automatically",
        "make image backgrounds transparent",
    ],
    "churn": [
        "predict customer churn",
        "which subscribers are likely to cancel",
        "churn prediction for a telecom company",
        "customer attrition model",
    ],
    "spanish speech": [
        "transcribe spanish podcasts",
        "speech to text in spanish",
        "spanish audio transcription",
        "convert spanish speech recordings to text",
    ],
}


async def test_paraphrases_group_together_and_different_needs_stay_apart(
    demand: DemandService, people: People
) -> None:
    need_of = {text: need for need, texts in NEEDS.items() for text in texts}
    for text in need_of:
        await demand.log_search(text, result_count=0)

    topics = await demand.unmet_demand(people.producer, limit=50)

    assert sum(topic.count for topic in topics) == len(need_of)
    for topic in topics:  # no topic mixes two needs
        assert len({need_of[text] for text in topic.examples}) == 1, topic.examples
    for need, texts in NEEDS.items():  # most phrasings of each need land in one topic
        largest = max(sum(text in topic.examples for text in texts) for topic in topics)
        assert largest >= 3, need
    assert len(topics) <= 6


async def test_topics_are_ordered_by_count_and_limited(demand: DemandService, people: People) -> None:
    for _ in range(3):
        await demand.log_search("predict customer churn", result_count=0)
    await demand.log_search("transcribe spanish podcasts", result_count=0)
    await demand.log_search("colorize black and white photos", result_count=0)

    topics = await demand.unmet_demand(people.producer, limit=2)

    assert len(topics) == 2
    assert topics[0].label == "predict customer churn" and topics[0].count == 3
    # Ties are broken by recency: the newest need comes first.
    assert topics[1].label == "colorize black and white photos"


async def test_category_filter_matches_given_or_inferred_category_regardless_of_case(
    demand: DemandService, people: People
) -> None:
    await demand.log_search(
        "remove the background from product photos", result_count=0, category="Computer Vision"
    )
    await demand.log_search("predict customer churn", result_count=0, category="Tabular")
    await demand.log_search("spanish audio transcription", result_count=0)

    vision = await demand.unmet_demand(people.producer, category="  computer vision ")
    everything = await demand.unmet_demand(people.producer)

    assert [t.label for t in vision] == ["remove the background from product photos"]
    assert {t.label for t in everything} == {
        "remove the background from product photos",
        "predict customer churn",
        "spanish audio transcription",
    }
    assert await demand.unmet_demand(people.producer, category="Audio") == []


async def test_since_filter_keeps_only_newer_searches(
    demand: DemandService, people: People, clock: MovableClock
) -> None:
    await demand.log_search("predict customer churn", result_count=0)
    clock.advance(3600)
    cut = clock.now - timedelta(seconds=1)
    await demand.log_search("churn prediction for a telecom company", result_count=0)
    await demand.log_search("transcribe spanish podcasts", result_count=0)

    recent = await demand.unmet_demand(people.producer, since=cut)

    assert sorted(example for topic in recent for example in topic.examples) == [
        "churn prediction for a telecom company",
        "transcribe spanish podcasts",
    ]
    churn = next(topic for topic in recent if "churn" in topic.label)
    assert churn.count == 1 and churn.first_seen >= cut
    assert sum(topic.count for topic in await demand.unmet_demand(people.producer)) == 3
