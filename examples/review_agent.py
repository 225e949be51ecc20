"""Product review analysis: a Python agent for eddy.

A port, in spirit, of the Flink Agents "review analysis" quickstart. There a
language model reads each review, gives it a score from 1 to 5 and names the
reasons a customer was unhappy; a second step collects this per product. Here
a small lexicon-based scoring function stands in for the model, so that the
example runs anywhere. It is a *durable* call: with --state, a review that was
scored before a crash is not scored again.

Each input record is {"key": product id, "id": review id, "review": text};
the key partitions the stream, so the reviews of one product are analysed in
order while different products run concurrently. Run it:

    build/eddy run examples/review_agent.py --input examples/data/reviews.jsonl \
        --output /tmp/out.jsonl [--state /tmp/review-state]

Each output line is one review's analysis plus the product's running summary.
"""
import re
import time

from eddy import Agent, Event, InputEvent, OutputEvent, RunnerContext, action

POSITIVE = {"great": 2, "excellent": 2, "love": 2, "perfect": 2, "good": 1, "nice": 1,
            "works": 1, "fast": 1, "sturdy": 1, "recommend": 1, "comfortable": 1}
NEGATIVE = {"broke": -2, "broken": -2, "terrible": -2, "awful": -2, "refund": -2,
            "bad": -1, "slow": -1, "late": -1, "small": -1, "cheap": -1, "noisy": -1,
            "leaks": -2, "missing": -1, "disappointed": -2}
REASONS = {"broke": "quality", "broken": "quality", "cheap": "quality", "leaks": "quality",
           "late": "shipping", "slow": "shipping", "missing": "shipping",
           "small": "size", "noisy": "noise", "refund": "price"}


class ProductReviewAnalysis(Event):
    """One review, scored: id, product_id, score (1-5) and reasons (a list)."""


def score_review(text: str) -> dict:
    """The slow call (a language model in the original). Runs on the worker
    pool; the sleep stands for the model's latency."""
    time.sleep(0.01)
    words = re.findall(r"[a-z]+", text.lower())
    raw = sum(POSITIVE.get(w, 0) + NEGATIVE.get(w, 0) for w in words)
    score = max(1, min(5, 3 + raw))
    reasons = sorted({REASONS[w] for w in words if w in REASONS})
    return {"score": score, "reasons": reasons if score <= 3 else []}


class ReviewAnalysisAgent(Agent):
    @action(InputEvent)
    @staticmethod
    async def analyze_review(event: InputEvent, ctx: RunnerContext):
        review = event.input
        result = await ctx.durable_execute_async(score_review, review["review"])
        ctx.send_event(ProductReviewAnalysis(id=review["id"], product_id=ctx.key,
                                             score=result["score"], reasons=result["reasons"]))

    @action(ProductReviewAnalysis)
    @staticmethod
    def summarize(event: ProductReviewAnalysis, ctx: RunnerContext):
        summary = ctx.short_term_memory
        seen = (summary.get("reviews_seen") or 0) + 1
        summary.set("reviews_seen", seen)
        summary.set("score_total", (summary.get("score_total") or 0) + event.score)
        for reason in event.reasons:
            path = "reasons." + reason
            summary.set(path, (summary.get(path) or 0) + 1)
        reasons = summary.get("reasons")
        counts = reasons.get_fields() if reasons is not None else {}
        ctx.send_event(OutputEvent(output={
            "id": event.id,
            "product_id": event.product_id,
            "score": event.score,
            "reasons": event.reasons,
            "reviews_seen": seen,
            "average_score": round(summary.get("score_total") / seen, 2),
            "top_reasons": sorted(counts, key=lambda r: (-counts[r], r))[:3],
        }))
