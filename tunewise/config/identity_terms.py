"""Built-in identity terms and counterfactual swaps for text without a group column.

The categories follow the identity groups of the Jigsaw "unintended bias" work (Borkan et al. 2019):
gender, religion, race/ethnicity, sexual orientation, disability and age. The lists are short on
purpose, whole words only, lower case; `fairness.identity_terms` in the config replaces them.
Swaps pair a term with its counterpart (woman <-> man) for counterfactual token fairness
(Garg et al. 2019): the same text, one identity changed, should get the same prediction.
"""

from __future__ import annotations

IDENTITY_TERMS: dict[str, dict[str, list[str]]] = {
    "gender": {
        "female": ["woman", "women", "female", "girl", "girls", "she", "her", "mother", "daughter", "wife"],
        "male": ["man", "men", "male", "boy", "boys", "he", "him", "his", "father", "son", "husband"],
    },
    "religion": {
        "muslim": ["muslim", "muslims", "islam", "islamic"],
        "christian": ["christian", "christians", "christianity"],
        "jewish": ["jew", "jews", "jewish", "judaism"],
        "hindu": ["hindu", "hindus"],
        "buddhist": ["buddhist", "buddhists"],
        "atheist": ["atheist", "atheists"],
    },
    "race_ethnicity": {
        "black": ["black", "african"],
        "white": ["white", "european", "caucasian"],
        "asian": ["asian", "chinese", "japanese", "korean", "indian"],
        "latino": ["latino", "latina", "hispanic", "mexican"],
        "arab": ["arab", "arabs"],
    },
    "sexual_orientation": {
        "gay": ["gay", "gays", "lesbian", "lesbians", "homosexual", "queer", "bisexual"],
        "straight": ["straight", "heterosexual"],
        "transgender": ["transgender", "trans"],
    },
    "disability": {
        "disabled": ["disabled", "blind", "deaf", "wheelchair", "autistic", "paralyzed"],
    },
    "age": {
        "old": ["old", "elderly", "aged", "senior", "seniors"],
        "young": ["young", "teenage", "teenager", "teenagers", "youth", "kid", "kids"],
    },
}

# Each pair is swapped in both directions; a text is changed only where a listed word occurs.
COUNTERFACTUAL_PAIRS: list[tuple[str, str]] = [
    ("woman", "man"),
    ("women", "men"),
    ("female", "male"),
    ("girl", "boy"),
    ("girls", "boys"),
    ("she", "he"),
    ("mother", "father"),
    ("daughter", "son"),
    ("wife", "husband"),
    ("muslim", "christian"),
    ("muslims", "christians"),
    ("jewish", "christian"),
    ("black", "white"),
    ("african", "european"),
    ("gay", "straight"),
    ("homosexual", "heterosexual"),
    ("old", "young"),
    ("elderly", "young"),
]
