"""Offline source of varied English sentences: a seeded phrase-structure grammar over a hand-written vocabulary.

Why a grammar and not a downloaded text corpus: nothing may be fetched at run time, Debian ships no sentence corpus
in `main`, and a grammar gives an unlimited, reproducible supply of distinct sentences (statements, questions,
commands, reported speech, subordinate clauses, spelled-out numbers) whose words every synthesiser can pronounce.
Numbers are written as words so that TTS input and ASR targets agree without text normalisation.
"""
from __future__ import annotations

import random

NOUNS = [  # (singular, plural)
    ("fisherman", "fishermen"), ("teacher", "teachers"), ("farmer", "farmers"), ("child", "children"),
    ("doctor", "doctors"), ("painter", "painters"), ("sailor", "sailors"), ("baker", "bakers"),
    ("student", "students"), ("neighbour", "neighbours"), ("pilot", "pilots"), ("gardener", "gardeners"),
    ("musician", "musicians"), ("driver", "drivers"), ("writer", "writers"), ("nurse", "nurses"),
    ("engineer", "engineers"), ("stranger", "strangers"), ("captain", "captains"), ("shopkeeper", "shopkeepers"),
    ("box", "boxes"), ("letter", "letters"), ("basket", "baskets"), ("lamp", "lamps"), ("bottle", "bottles"),
    ("blanket", "blankets"), ("map", "maps"), ("ladder", "ladders"), ("bucket", "buckets"), ("coat", "coats"),
    ("window", "windows"), ("bridge", "bridges"), ("garden", "gardens"), ("river", "rivers"), ("road", "roads"),
    ("train", "trains"), ("boat", "boats"), ("horse", "horses"), ("dog", "dogs"), ("cat", "cats"),
    ("bird", "birds"), ("apple", "apples"), ("candle", "candles"), ("clock", "clocks"), ("drum", "drums"),
    ("kettle", "kettles"), ("hammer", "hammers"), ("pencil", "pencils"), ("table", "tables"), ("chair", "chairs"),
    ("house", "houses"), ("village", "villages"), ("market", "markets"), ("field", "fields"), ("forest", "forests"),
    ("mountain", "mountains"), ("island", "islands"), ("storm", "storms"), ("song", "songs"), ("story", "stories"),
    ("photograph", "photographs"), ("newspaper", "newspapers"), ("key", "keys"), ("wheel", "wheels"),
    ("cup", "cups"), ("plate", "plates"), ("book", "books"), ("ticket", "tickets"), ("jacket", "jackets"),
    ("rope", "ropes"), ("stone", "stones"), ("flower", "flowers"), ("tree", "trees"), ("fence", "fences"),
]
ADJECTIVES = [
    "old", "young", "quiet", "noisy", "bright", "dark", "heavy", "light", "small", "large", "tired", "careful",
    "clever", "gentle", "brave", "lazy", "curious", "friendly", "patient", "busy", "wooden", "silver", "golden",
    "broken", "empty", "crowded", "narrow", "wide", "ancient", "modern", "cold", "warm", "wet", "dry", "green",
    "red", "blue", "yellow", "purple", "tall", "short", "strange", "famous", "simple", "polite", "honest",
    "sleepy", "hungry", "cheerful", "nervous", "distant", "hidden", "fragile", "shiny", "dusty", "rusty",
]
VERBS = [  # (base, past, past participle)
    ("carry", "carried", "carried"), ("paint", "painted", "painted"), ("open", "opened", "opened"),
    ("close", "closed", "closed"), ("find", "found", "found"), ("lose", "lost", "lost"), ("build", "built", "built"),
    ("repair", "repaired", "repaired"), ("sell", "sold", "sold"), ("buy", "bought", "bought"),
    ("watch", "watched", "watched"), ("follow", "followed", "followed"), ("clean", "cleaned", "cleaned"),
    ("move", "moved", "moved"), ("borrow", "borrowed", "borrowed"), ("hide", "hid", "hidden"),
    ("describe", "described", "described"), ("deliver", "delivered", "delivered"), ("forget", "forgot", "forgotten"),
    ("remember", "remembered", "remembered"), ("notice", "noticed", "noticed"), ("count", "counted", "counted"),
    ("pull", "pulled", "pulled"), ("push", "pushed", "pushed"), ("throw", "threw", "thrown"),
    ("catch", "caught", "caught"), ("draw", "drew", "drawn"), ("wash", "washed", "washed"),
    ("fold", "folded", "folded"), ("lift", "lifted", "lifted"), ("visit", "visited", "visited"),
    ("guard", "guarded", "guarded"), ("measure", "measured", "measured"), ("examine", "examined", "examined"),
]
INTRANSITIVE = [  # (base, past)
    ("laugh", "laughed"), ("wait", "waited"), ("sing", "sang"), ("run", "ran"), ("sleep", "slept"),
    ("whisper", "whispered"), ("travel", "travelled"), ("arrive", "arrived"), ("leave", "left"),
    ("smile", "smiled"), ("listen", "listened"), ("shout", "shouted"), ("dance", "danced"), ("rest", "rested"),
]
NAMES = [
    "Anna", "Peter", "Maria", "James", "Sophie", "Daniel", "Laura", "Thomas", "Emma", "Oliver", "Grace", "Henry",
    "Clara", "Samuel", "Lucy", "Martin", "Alice", "Robert", "Helen", "George", "Rosa", "Victor", "Nora", "Felix",
]
PLACES = [
    "the harbour", "the station", "the library", "the kitchen", "the old mill", "the north gate", "the school",
    "the museum", "the bakery", "the farm", "the lighthouse", "the hospital", "the village square", "the market",
    "the castle", "the beach", "the valley", "the theatre", "the post office", "the bus stop",
]
PREPOSITIONS = ["near", "behind", "inside", "outside", "across", "beside", "towards", "past", "around", "under"]
TIMES = [
    "before sunrise", "after lunch", "in the evening", "on Monday morning", "last winter", "every Sunday",
    "during the storm", "at midnight", "in the spring", "yesterday afternoon", "early this morning",
    "late at night", "after the concert", "before the rain", "next summer", "on a cold day",
]
ADVERBS = [
    "slowly", "quickly", "quietly", "carefully", "happily", "suddenly", "gently", "proudly", "patiently",
    "nervously", "silently", "eagerly", "calmly", "bravely",
]
NUMBERS = [
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "fifteen",
    "twenty", "thirty", "forty", "fifty", "a hundred", "a few", "several", "many",
]
REPORT_VERBS = ["said", "thought", "explained", "believed", "noticed", "remembered", "wrote", "promised"]
CONNECTIVES = ["because", "although", "while", "so", "but", "and"]


class SentenceGenerator:
    """Seeded generator of distinct English sentences; `sample(n)` never repeats a sentence within one generator."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.seen: set[str] = set()
        self.templates = [
            self._statement, self._statement, self._statement, self._question, self._command,
            self._reported, self._compound, self._counting, self._subordinate, self._passive,
        ]

    def _np(self, plural: bool | None = None) -> str:
        rng = self.rng
        if plural is None:
            plural = rng.random() < 0.3
        singular, plural_form = rng.choice(NOUNS)
        adj = rng.choice(ADJECTIVES) + " " if rng.random() < 0.7 else ""
        if plural:
            det = rng.choice(["the", "some", "those", "these", rng.choice(NUMBERS)])
            return f"{det} {adj}{plural_form}"
        det = rng.choice(["the", "a", "that", "this", "her", "his", "our"])
        if det == "a" and (adj or singular)[0] in "aeiou":
            det = "an"
        return f"{det} {adj}{singular}"

    def _subject(self) -> str:
        return self.rng.choice(NAMES) if self.rng.random() < 0.35 else self._np()

    def _tail(self) -> str:
        rng = self.rng
        parts = []
        if rng.random() < 0.6:
            parts.append(f"{rng.choice(PREPOSITIONS)} {rng.choice(PLACES)}")
        if rng.random() < 0.5:
            parts.append(rng.choice(TIMES))
        return (" " + " ".join(parts)) if parts else ""

    def _clause(self) -> str:
        rng = self.rng
        if rng.random() < 0.7:
            verb = rng.choice(VERBS)[1]
            adverb = rng.choice(ADVERBS) + " " if rng.random() < 0.3 else ""
            return f"{self._subject()} {adverb}{verb} {self._np()}{self._tail()}"
        return f"{self._subject()} {rng.choice(INTRANSITIVE)[1]} {rng.choice(ADVERBS)}{self._tail()}"

    def _statement(self) -> str:
        return self._clause() + "."

    def _question(self) -> str:
        rng = self.rng
        base = rng.choice(VERBS)[0]
        opener = rng.choice(["Did", "Will", "Could", "Should", "Why did", "Where did", "When will"])
        return f"{opener} {self._subject()} {base} {self._np()}{self._tail()}?"

    def _command(self) -> str:
        rng = self.rng
        lead = rng.choice(["Please", "Do not", "Try to", "Remember to", "Never"])
        return f"{lead} {rng.choice(VERBS)[0]} {self._np()}{self._tail()}."

    def _reported(self) -> str:
        return f"{self.rng.choice(NAMES)} {self.rng.choice(REPORT_VERBS)} that {self._clause()}."

    def _compound(self) -> str:
        return f"{self._clause()}, {self.rng.choice(CONNECTIVES)} {self._clause()}."

    def _counting(self) -> str:
        rng = self.rng
        number = rng.choice(NUMBERS)
        singular, plural_form = rng.choice(NOUNS)
        return f"There were {number} {rng.choice(ADJECTIVES)} {plural_form} {rng.choice(PREPOSITIONS)} {rng.choice(PLACES)}."

    def _subordinate(self) -> str:
        rng = self.rng
        conj = rng.choice(["When", "After", "Before", "Because", "If", "While"])
        return f"{conj} {self._clause()}, {self._clause()}."

    def _passive(self) -> str:
        rng = self.rng
        base, past, participle = rng.choice(VERBS)
        return f"{self._np(plural=False).capitalize()} was {participle} by {self._subject()}{self._tail()}."

    def sentence(self, max_words: int = 24) -> str:
        """One new sentence with 4..max_words words, capitalised, ending in punctuation."""
        while True:
            text = self.rng.choice(self.templates)()
            text = text[0].upper() + text[1:]
            if 4 <= len(text.split()) <= max_words and text not in self.seen:
                self.seen.add(text)
                return text

    def sample(self, n: int, max_words: int = 24) -> list[str]:
        return [self.sentence(max_words) for _ in range(n)]
