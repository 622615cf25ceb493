"""Offline source of varied English sentences: a seeded phrase-structure grammar over a hand-written vocabulary.

Why a grammar and not a downloaded text corpus: nothing may be fetched at run time, Debian ships no sentence corpus
in `main`, and a grammar gives an unlimited, reproducible supply of distinct sentences (statements, questions,
commands, reported speech, subordinate clauses, spelled-out numbers) whose words every synthesiser can pronounce.
Numbers are written as words so that TTS input and ASR targets agree without text normalisation.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

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


# The "large" vocabulary: the lists above plus these (about 1500 words in all against 447). A model trained on the base
# vocabulary learns its frequent phrases more than its letters (docs/learning.md section 27); more words teach reading.
EXTRA_NOUNS = [
    ("actor", "actors"), ("artist", "artists"), ("banker", "bankers"), ("barber", "barbers"), ("builder", "builders"),
    ("butcher", "butchers"), ("carpenter", "carpenters"), ("chemist", "chemists"), ("clerk", "clerks"),
    ("cook", "cooks"), ("dancer", "dancers"), ("dentist", "dentists"), ("detective", "detectives"),
    ("editor", "editors"), ("fireman", "firemen"), ("guard", "guards"), ("guest", "guests"), ("hunter", "hunters"),
    ("judge", "judges"), ("king", "kings"), ("queen", "queens"), ("lawyer", "lawyers"), ("librarian", "librarians"),
    ("mayor", "mayors"), ("merchant", "merchants"), ("miner", "miners"), ("monk", "monks"), ("officer", "officers"),
    ("poet", "poets"), ("priest", "priests"), ("prince", "princes"), ("princess", "princesses"),
    ("professor", "professors"), ("soldier", "soldiers"), ("singer", "singers"), ("tailor", "tailors"),
    ("tourist", "tourists"), ("traveller", "travellers"), ("visitor", "visitors"), ("waiter", "waiters"),
    ("woman", "women"), ("man", "men"), ("girl", "girls"), ("boy", "boys"), ("baby", "babies"), ("uncle", "uncles"),
    ("aunt", "aunts"), ("cousin", "cousins"), ("friend", "friends"), ("brother", "brothers"), ("sister", "sisters"),
    ("grandmother", "grandmothers"), ("grandfather", "grandfathers"), ("daughter", "daughters"), ("son", "sons"),
    ("wolf", "wolves"), ("fox", "foxes"), ("rabbit", "rabbits"), ("mouse", "mice"), ("goose", "geese"),
    ("sheep", "sheep"), ("cow", "cows"), ("goat", "goats"), ("pig", "pigs"), ("duck", "ducks"), ("owl", "owls"),
    ("eagle", "eagles"), ("swan", "swans"), ("frog", "frogs"), ("snake", "snakes"), ("bear", "bears"),
    ("lion", "lions"), ("tiger", "tigers"), ("monkey", "monkeys"), ("elephant", "elephants"), ("whale", "whales"),
    ("dolphin", "dolphins"), ("butterfly", "butterflies"), ("spider", "spiders"), ("bee", "bees"),
    ("pebble", "pebbles"), ("feather", "feathers"), ("mirror", "mirrors"), ("pillow", "pillows"),
    ("carpet", "carpets"), ("curtain", "curtains"), ("envelope", "envelopes"), ("parcel", "parcels"),
    ("suitcase", "suitcases"), ("umbrella", "umbrellas"), ("helmet", "helmets"), ("glove", "gloves"),
    ("boot", "boots"), ("scarf", "scarves"), ("ribbon", "ribbons"), ("button", "buttons"), ("needle", "needles"),
    ("thread", "threads"), ("brush", "brushes"), ("comb", "combs"), ("towel", "towels"), ("blanket", "blankets"),
    ("spoon", "spoons"), ("fork", "forks"), ("knife", "knives"), ("bowl", "bowls"), ("jar", "jars"),
    ("barrel", "barrels"), ("crate", "crates"), ("sack", "sacks"), ("wagon", "wagons"), ("bicycle", "bicycles"),
    ("tractor", "tractors"), ("truck", "trucks"), ("ship", "ships"), ("canoe", "canoes"), ("plane", "planes"),
    ("rocket", "rockets"), ("engine", "engines"), ("machine", "machines"), ("computer", "computers"),
    ("telephone", "telephones"), ("radio", "radios"), ("camera", "cameras"), ("guitar", "guitars"),
    ("piano", "pianos"), ("violin", "violins"), ("trumpet", "trumpets"), ("whistle", "whistles"), ("bell", "bells"),
    ("painting", "paintings"), ("statue", "statues"), ("poster", "posters"), ("diary", "diaries"),
    ("dictionary", "dictionaries"), ("magazine", "magazines"), ("novel", "novels"), ("recipe", "recipes"),
    ("puzzle", "puzzles"), ("riddle", "riddles"), ("secret", "secrets"), ("message", "messages"),
    ("question", "questions"), ("answer", "answers"), ("promise", "promises"), ("problem", "problems"),
    ("idea", "ideas"), ("plan", "plans"), ("journey", "journeys"), ("holiday", "holidays"), ("party", "parties"),
    ("wedding", "weddings"), ("meeting", "meetings"), ("lesson", "lessons"), ("game", "games"), ("match", "matches"),
    ("prize", "prizes"), ("medal", "medals"), ("coin", "coins"), ("wallet", "wallets"), ("purse", "purses"),
    ("ring", "rings"), ("necklace", "necklaces"), ("crown", "crowns"), ("sword", "swords"), ("shield", "shields"),
    ("arrow", "arrows"), ("flag", "flags"), ("tent", "tents"), ("cabin", "cabins"), ("cottage", "cottages"),
    ("tower", "towers"), ("palace", "palaces"), ("temple", "temples"), ("church", "churches"), ("chapel", "chapels"),
    ("factory", "factories"), ("office", "offices"), ("hotel", "hotels"), ("restaurant", "restaurants"),
    ("shop", "shops"), ("street", "streets"), ("tunnel", "tunnels"), ("valley", "valleys"), ("hill", "hills"),
    ("lake", "lakes"), ("pond", "ponds"), ("ocean", "oceans"), ("desert", "deserts"), ("cave", "caves"),
    ("cliff", "cliffs"), ("meadow", "meadows"), ("orchard", "orchards"), ("vineyard", "vineyards"),
    ("cloud", "clouds"), ("star", "stars"), ("planet", "planets"), ("shadow", "shadows"), ("wave", "waves"),
    ("leaf", "leaves"), ("branch", "branches"), ("root", "roots"), ("seed", "seeds"), ("mushroom", "mushrooms"),
    ("potato", "potatoes"), ("tomato", "tomatoes"), ("carrot", "carrots"), ("onion", "onions"), ("lemon", "lemons"),
    ("orange", "oranges"), ("banana", "bananas"), ("cherry", "cherries"), ("strawberry", "strawberries"),
    ("peach", "peaches"), ("pear", "pears"), ("sandwich", "sandwiches"), ("biscuit", "biscuits"), ("cake", "cakes"),
    ("pie", "pies"), ("loaf", "loaves"), ("egg", "eggs"), ("cheese", "cheeses"), ("sausage", "sausages"),
    ("envelope", "envelopes"), ("calendar", "calendars"), ("certificate", "certificates"), ("receipt", "receipts"),
    ("invitation", "invitations"), ("telescope", "telescopes"), ("microscope", "microscopes"),
    ("compass", "compasses"), ("lantern", "lanterns"), ("torch", "torches"), ("battery", "batteries"),
    ("chimney", "chimneys"), ("staircase", "staircases"), ("balcony", "balconies"), ("cellar", "cellars"),
    ("attic", "attics"), ("corridor", "corridors"), ("doorway", "doorways"), ("cupboard", "cupboards"),
    ("drawer", "drawers"), ("shelf", "shelves"), ("sofa", "sofas"), ("bed", "beds"), ("desk", "desks"),
]
EXTRA_ADJECTIVES = [
    "angry", "anxious", "awkward", "beautiful", "bitter", "bold", "boring", "calm", "careless", "cheap", "clean",
    "clumsy", "comfortable", "cosy", "cruel", "cute", "dangerous", "delicate", "delicious", "dirty", "eager",
    "elegant", "enormous", "expensive", "faint", "fancy", "fierce", "filthy", "flat", "fluffy", "foolish", "fresh",
    "frozen", "funny", "generous", "giant", "glad", "grumpy", "handsome", "happy", "harsh", "healthy", "helpful",
    "helpless", "hollow", "huge", "humble", "icy", "jolly", "kind", "little", "lively", "lonely", "loud", "lovely",
    "lucky", "magnificent", "messy", "mighty", "muddy", "mysterious", "neat", "new", "nice", "orange", "pale",
    "peaceful", "perfect", "plain", "pleasant", "poor", "precious", "pretty", "proud", "quick", "rare", "rich",
    "rough", "round", "royal", "sad", "salty", "scary", "secret", "selfish", "serious", "sharp", "shy", "silly",
    "slippery", "slow", "smooth", "soft", "solid", "sour", "spicy", "square", "steep", "sticky", "stormy", "strict",
    "strong", "stubborn", "sturdy", "sudden", "sunny", "sweet", "swift", "thick", "thin", "tiny", "tough", "ugly",
    "useful", "vast", "violent", "wild", "wise", "wonderful", "worried", "wrinkled", "bored", "brilliant", "pink",
    "white", "black", "brown", "grey", "crimson", "scarlet", "velvet", "woollen", "leather", "paper", "plastic",
]
EXTRA_VERBS = [
    ("accept", "accepted", "accepted"), ("admire", "admired", "admired"), ("answer", "answered", "answered"),
    ("arrange", "arranged", "arranged"), ("attack", "attacked", "attacked"), ("bake", "baked", "baked"),
    ("bend", "bent", "bent"), ("bite", "bit", "bitten"), ("blow", "blew", "blown"), ("boil", "boiled", "boiled"),
    ("break", "broke", "broken"), ("bring", "brought", "brought"), ("burn", "burned", "burned"),
    ("bury", "buried", "buried"), ("call", "called", "called"), ("chase", "chased", "chased"),
    ("check", "checked", "checked"), ("choose", "chose", "chosen"), ("climb", "climbed", "climbed"),
    ("collect", "collected", "collected"), ("cook", "cooked", "cooked"), ("copy", "copied", "copied"),
    ("cover", "covered", "covered"), ("cut", "cut", "cut"), ("decorate", "decorated", "decorated"),
    ("destroy", "destroyed", "destroyed"), ("dig", "dug", "dug"), ("discover", "discovered", "discovered"),
    ("drag", "dragged", "dragged"), ("drink", "drank", "drunk"), ("drive", "drove", "driven"),
    ("drop", "dropped", "dropped"), ("eat", "ate", "eaten"), ("empty", "emptied", "emptied"),
    ("enjoy", "enjoyed", "enjoyed"), ("explore", "explored", "explored"), ("feed", "fed", "fed"),
    ("fill", "filled", "filled"), ("fix", "fixed", "fixed"), ("freeze", "froze", "frozen"),
    ("gather", "gathered", "gathered"), ("give", "gave", "given"), ("grab", "grabbed", "grabbed"),
    ("greet", "greeted", "greeted"), ("grow", "grew", "grown"), ("hang", "hung", "hung"), ("hear", "heard", "heard"),
    ("help", "helped", "helped"), ("hit", "hit", "hit"), ("hold", "held", "held"), ("hug", "hugged", "hugged"),
    ("hunt", "hunted", "hunted"), ("invite", "invited", "invited"), ("join", "joined", "joined"),
    ("keep", "kept", "kept"), ("kick", "kicked", "kicked"), ("kiss", "kissed", "kissed"),
    ("knock", "knocked", "knocked"), ("lead", "led", "led"), ("lend", "lent", "lent"), ("like", "liked", "liked"),
    ("load", "loaded", "loaded"), ("lock", "locked", "locked"), ("love", "loved", "loved"), ("make", "made", "made"),
    ("mend", "mended", "mended"), ("miss", "missed", "missed"), ("mix", "mixed", "mixed"),
    ("order", "ordered", "ordered"), ("pack", "packed", "packed"), ("pass", "passed", "passed"),
    ("pick", "picked", "picked"), ("place", "placed", "placed"), ("plant", "planted", "planted"),
    ("play", "played", "played"), ("polish", "polished", "polished"), ("post", "posted", "posted"),
    ("pour", "poured", "poured"), ("prepare", "prepared", "prepared"), ("print", "printed", "printed"),
    ("protect", "protected", "protected"), ("read", "read", "read"), ("receive", "received", "received"),
    ("record", "recorded", "recorded"), ("reach", "reached", "reached"), ("replace", "replaced", "replaced"),
    ("rescue", "rescued", "rescued"), ("ride", "rode", "ridden"), ("ring", "rang", "rung"),
    ("roll", "rolled", "rolled"), ("save", "saved", "saved"), ("scratch", "scratched", "scratched"),
    ("search", "searched", "searched"), ("see", "saw", "seen"), ("send", "sent", "sent"), ("sew", "sewed", "sewn"),
    ("shake", "shook", "shaken"), ("share", "shared", "shared"), ("shut", "shut", "shut"), ("sign", "signed", "signed"),
    ("slice", "sliced", "sliced"), ("smell", "smelled", "smelled"), ("spill", "spilled", "spilled"),
    ("squeeze", "squeezed", "squeezed"), ("steal", "stole", "stolen"), ("stir", "stirred", "stirred"),
    ("study", "studied", "studied"), ("swallow", "swallowed", "swallowed"), ("sweep", "swept", "swept"),
    ("take", "took", "taken"), ("taste", "tasted", "tasted"), ("teach", "taught", "taught"),
    ("tear", "tore", "torn"), ("tie", "tied", "tied"), ("touch", "touched", "touched"), ("trace", "traced", "traced"),
    ("trust", "trusted", "trusted"), ("turn", "turned", "turned"), ("unlock", "unlocked", "unlocked"),
    ("use", "used", "used"), ("weigh", "weighed", "weighed"), ("wrap", "wrapped", "wrapped"),
    ("write", "wrote", "written"), ("welcome", "welcomed", "welcomed"), ("warn", "warned", "warned"),
]
EXTRA_INTRANSITIVE = [
    ("cry", "cried"), ("jump", "jumped"), ("swim", "swam"), ("fly", "flew"), ("fall", "fell"), ("sit", "sat"),
    ("stand", "stood"), ("walk", "walked"), ("climb", "climbed"), ("hurry", "hurried"), ("wander", "wandered"),
    ("argue", "argued"), ("complain", "complained"), ("disappear", "disappeared"), ("escape", "escaped"),
    ("explain", "explained"), ("giggle", "giggled"), ("hesitate", "hesitated"), ("kneel", "knelt"),
    ("limp", "limped"), ("nod", "nodded"), ("pause", "paused"), ("pray", "prayed"), ("relax", "relaxed"),
    ("return", "returned"), ("shiver", "shivered"), ("sigh", "sighed"), ("skate", "skated"), ("sneeze", "sneezed"),
    ("stumble", "stumbled"), ("surrender", "surrendered"), ("tremble", "trembled"), ("vanish", "vanished"),
    ("wave", "waved"), ("yawn", "yawned"), ("work", "worked"), ("play", "played"), ("cough", "coughed"),
]
EXTRA_NAMES = [
    "Adam", "Beatrice", "Charles", "Diana", "Edward", "Fiona", "Gordon", "Harriet", "Isaac", "Julia", "Kevin",
    "Lillian", "Michael", "Natalie", "Oscar", "Patricia", "Quentin", "Rebecca", "Simon", "Teresa", "Ursula",
    "Vincent", "Wendy", "Xavier", "Yvonne", "Zachary", "Amelia", "Benjamin", "Caroline", "Dominic", "Eleanor",
    "Frederick", "Gabriel", "Hannah", "Ivan", "Jessica", "Katherine", "Leonard", "Margaret", "Nicholas", "Olivia",
    "Patrick", "Rachel", "Stephen", "Timothy", "Vanessa", "William", "Arthur", "Bridget", "Christopher", "Dorothy",
    "Elizabeth", "Francis", "Gregory", "Jonathan", "Matilda", "Philip", "Richard", "Susan", "Walter",
]
EXTRA_PLACES = [
    "the airport", "the bank", "the barn", "the bathroom", "the bedroom", "the bookshop", "the bridge", "the cafe",
    "the canal", "the cathedral", "the cemetery", "the cinema", "the city hall", "the classroom", "the courtyard",
    "the dentist's office", "the desert", "the dining room", "the factory", "the fire station", "the garage",
    "the greenhouse", "the gym", "the hall", "the hill", "the hotel", "the island", "the jungle", "the laboratory",
    "the lake", "the meadow", "the mountain", "the office", "the orchard", "the palace", "the park",
    "the pharmacy", "the playground", "the police station", "the pond", "the prison", "the railway",
    "the restaurant", "the river bank", "the shop", "the stadium", "the stable", "the supermarket", "the swamp",
    "the swimming pool", "the temple", "the tower", "the town hall", "the university", "the vineyard",
    "the waterfall", "the woods", "the zoo", "the front door", "the back garden",
]
EXTRA_PREPOSITIONS = ["above", "below", "along", "against", "beyond", "through", "among", "opposite", "upon", "within"]
EXTRA_TIMES = [
    "after breakfast", "before dinner", "at noon", "at dawn", "at dusk", "on Tuesday", "on Wednesday evening",
    "on Thursday", "on Friday night", "on Saturday", "last week", "last month", "last year", "next week",
    "next month", "tomorrow morning", "tonight", "this afternoon", "in the autumn", "in the winter",
    "during the holidays", "after school", "before the game", "during the wedding", "after the meeting",
    "on a sunny day", "on a rainy afternoon", "in the middle of the night", "once a week", "twice a year",
]
EXTRA_ADVERBS = [
    "angrily", "awkwardly", "badly", "boldly", "brightly", "briskly", "cautiously", "cheerfully", "clearly",
    "closely", "correctly", "cruelly", "deliberately", "easily", "elegantly", "fiercely", "foolishly", "freely",
    "generously", "gladly", "gracefully", "greedily", "honestly", "hungrily", "kindly", "lazily", "loudly",
    "merrily", "mysteriously", "neatly", "openly", "politely", "poorly", "promptly", "rapidly", "rarely",
    "roughly", "sadly", "safely", "seriously", "sharply", "shyly", "smoothly", "softly", "sternly", "swiftly",
    "tenderly", "thoughtfully", "tightly", "wearily", "wildly", "wisely",
]
EXTRA_NUMBERS = [
    "thirteen", "fourteen", "sixteen", "seventeen", "eighteen", "nineteen", "sixty", "seventy", "eighty", "ninety",
    "a thousand", "a dozen", "dozens of", "hundreds of", "a pair of",
]
EXTRA_REPORT_VERBS = ["announced", "argued", "claimed", "complained", "admitted", "guessed", "insisted", "whispered",
                      "shouted", "suggested", "warned", "decided"]
EXTRA_CONNECTIVES = ["yet", "since", "until", "unless", "whereas"]


@dataclass(frozen=True)
class Vocabulary:
    nouns: list
    adjectives: list
    verbs: list
    intransitive: list
    names: list
    places: list
    prepositions: list
    times: list
    adverbs: list
    numbers: list
    report_verbs: list
    connectives: list

    def words(self) -> set[str]:
        """Every distinct word the grammar can write from this vocabulary (lower case)."""
        items = [w for pair in self.nouns for w in pair] + self.adjectives + [w for v in self.verbs for w in v]
        items += [w for v in self.intransitive for w in v] + self.names + self.places + self.prepositions
        items += self.times + self.adverbs + self.numbers + self.report_verbs + self.connectives
        return {word.lower() for item in items for word in item.split()}


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


VOCABULARIES = {
    "base": Vocabulary(NOUNS, ADJECTIVES, VERBS, INTRANSITIVE, NAMES, PLACES, PREPOSITIONS, TIMES, ADVERBS, NUMBERS,
                       REPORT_VERBS, CONNECTIVES),
    "large": Vocabulary(_unique(NOUNS + EXTRA_NOUNS), _unique(ADJECTIVES + EXTRA_ADJECTIVES),
                        _unique(VERBS + EXTRA_VERBS), _unique(INTRANSITIVE + EXTRA_INTRANSITIVE),
                        _unique(NAMES + EXTRA_NAMES), _unique(PLACES + EXTRA_PLACES),
                        _unique(PREPOSITIONS + EXTRA_PREPOSITIONS), _unique(TIMES + EXTRA_TIMES),
                        _unique(ADVERBS + EXTRA_ADVERBS), _unique(NUMBERS + EXTRA_NUMBERS),
                        _unique(REPORT_VERBS + EXTRA_REPORT_VERBS), _unique(CONNECTIVES + EXTRA_CONNECTIVES)),
}


class SentenceGenerator:
    """Seeded generator of distinct English sentences; `sample(n)` never repeats a sentence within one generator.
    `vocabulary`: "base" (447 words; every corpus before session 22) or "large" (about 1500)."""

    def __init__(self, seed: int = 0, vocabulary: str = "base"):
        if vocabulary not in VOCABULARIES:
            raise ValueError(f"unknown vocabulary {vocabulary!r}; choose one of {sorted(VOCABULARIES)}")
        self.v = VOCABULARIES[vocabulary]
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
        singular, plural_form = rng.choice(self.v.nouns)
        adj = rng.choice(self.v.adjectives) + " " if rng.random() < 0.7 else ""
        if plural:
            det = rng.choice(["the", "some", "those", "these", rng.choice(self.v.numbers)])
            return f"{det} {adj}{plural_form}"
        det = rng.choice(["the", "a", "that", "this", "her", "his", "our"])
        if det == "a" and (adj or singular)[0] in "aeiou":
            det = "an"
        return f"{det} {adj}{singular}"

    def _subject(self) -> str:
        return self.rng.choice(self.v.names) if self.rng.random() < 0.35 else self._np()

    def _tail(self) -> str:
        rng = self.rng
        parts = []
        if rng.random() < 0.6:
            parts.append(f"{rng.choice(self.v.prepositions)} {rng.choice(self.v.places)}")
        if rng.random() < 0.5:
            parts.append(rng.choice(self.v.times))
        return (" " + " ".join(parts)) if parts else ""

    def _clause(self) -> str:
        rng = self.rng
        if rng.random() < 0.7:
            verb = rng.choice(self.v.verbs)[1]
            adverb = rng.choice(self.v.adverbs) + " " if rng.random() < 0.3 else ""
            return f"{self._subject()} {adverb}{verb} {self._np()}{self._tail()}"
        return f"{self._subject()} {rng.choice(self.v.intransitive)[1]} {rng.choice(self.v.adverbs)}{self._tail()}"

    def _statement(self) -> str:
        return self._clause() + "."

    def _question(self) -> str:
        rng = self.rng
        base = rng.choice(self.v.verbs)[0]
        opener = rng.choice(["Did", "Will", "Could", "Should", "Why did", "Where did", "When will"])
        return f"{opener} {self._subject()} {base} {self._np()}{self._tail()}?"

    def _command(self) -> str:
        rng = self.rng
        lead = rng.choice(["Please", "Do not", "Try to", "Remember to", "Never"])
        return f"{lead} {rng.choice(self.v.verbs)[0]} {self._np()}{self._tail()}."

    def _reported(self) -> str:
        return f"{self.rng.choice(self.v.names)} {self.rng.choice(self.v.report_verbs)} that {self._clause()}."

    def _compound(self) -> str:
        return f"{self._clause()}, {self.rng.choice(self.v.connectives)} {self._clause()}."

    def _counting(self) -> str:
        rng = self.rng
        number = rng.choice(self.v.numbers)
        singular, plural_form = rng.choice(self.v.nouns)
        return f"There were {number} {rng.choice(self.v.adjectives)} {plural_form} {rng.choice(self.v.prepositions)} {rng.choice(self.v.places)}."

    def _subordinate(self) -> str:
        rng = self.rng
        conj = rng.choice(["When", "After", "Before", "Because", "If", "While"])
        return f"{conj} {self._clause()}, {self._clause()}."

    def _passive(self) -> str:
        rng = self.rng
        base, past, participle = rng.choice(self.v.verbs)
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
