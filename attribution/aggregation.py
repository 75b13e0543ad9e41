"""The influence methods and the rules by which scores become contributor shares, as a manifest names
them. No Django, no numpy."""

METHODS = ("datainf", "tracin", "tracincp")  # attribution/influence.py, attribution/trace.py

AGGREGATIONS = {  # rule -> the sentence a manifest carries
    "sum": "per contributor: the sum of its records' scores (mean over held-out examples); shares: "
    "positive parts normalised to 1; 95% intervals: bootstrap over the held-out examples",
    "question_shares": "per held-out example: each contributor's positive summed score as a share of that "
    "example's; a contributor's share: the mean of its shares over the examples (normalised to 1), so a small "
    "contribution that decides a few examples is not outvoted by volume; score: the sum rule's; 95% "
    "intervals: bootstrap over the held-out examples",
}
