#!/usr/bin/env python3
"""Generate bertsweep's small demo sentiment data set.

This script writes examples/data/reviews-train.tsv and examples/data/reviews-dev.tsv,
a tiny movie-review sentiment task (GLUE style: header "sentence<TAB>label", label
1 = positive, 0 = negative) used by bertsweep's demo and smoke grid
(examples/smoke-grid.toml).

The data is SYNTHETIC. Every review is composed from the hand-written phrase banks
below (invented film titles, genres, per-aspect opinion phrases of varying strength,
hedges, contrasts and overall verdicts) written for bertsweep; nothing is copied from
an existing corpus (SST-2, IMDB, Rotten Tomatoes, Yelp, ...). Reviews mix praise and
criticism, but the overall verdict is meant to be clear to a human reader, and the
label is that overall verdict.

Standard library only, fixed seed: running

    python3 examples/data/make_reviews.py

regenerates both files byte-identically. License: Apache-2.0, as the project.
"""

import os
import random

SEED = 20240611
TRAIN_PER_LABEL = 320
DEV_PER_LABEL = 160
MIN_WORDS, MAX_WORDS = 6, 40

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# Phrase banks
# ---------------------------------------------------------------------------

TITLES = [
    "The Glass Orchard", "Midnight at Harrow Lane", "Salt and Thunder", "The Last Cartographer",
    "Paper Lanterns", "Iron Meridian", "The Quiet Tenant", "Velvet Static", "A Winter for Wolves",
    "Blue Hour Boulevard", "The Clockmaker's Daughter", "Neon Saints", "Dust Over Carraway",
    "The Lighthouse Accord", "Second Moon", "Ashes of Avalon Street", "The Borrowed Summer",
    "Hollow Crown Motel", "Orbit of Strangers", "The Tin Sparrow", "Riverbend", "Gravity Waltz",
    "The Ninth Passenger", "Copper Sky", "Letters to Lisbon", "The Fen House",
    "Starlight Express Lane", "Fever Garden", "The Marble Detective", "Northbound",
    "Tangerine Dream Machine", "The Understudy", "Brass Knuckle Ballet", "Whisper Creek",
    "The Salt Road", "Cold Harbour", "Moth and Flame", "The Eleventh Floor", "Sundown Protocol",
    "Kites Over Kilburn", "The Velvet Heist", "Driftwood Kings",
]

GENRES = [
    "thriller", "romantic comedy", "space opera", "family drama", "horror film", "heist movie",
    "coming-of-age story", "musical", "western", "courtroom drama", "animated adventure",
    "period piece", "detective story", "war film", "sports drama", "fantasy epic",
    "road movie", "psychological thriller", "buddy comedy", "disaster movie",
]

# Per aspect: noun phrases (grammatically singular), then strong and mild predicates.
ASPECTS = {
    "acting": {
        "nouns": ["the acting", "the cast", "the lead performance", "the supporting cast",
                  "the ensemble", "the central performance"],
        "pos": ["is terrific", "feels honest and lived-in", "carries every scene",
                "is superb from top to bottom", "is magnetic", "deserves every award going"],
        "pos_mild": ["is solid", "is decent enough", "does its job", "is likeable"],
        "neg": ["is wooden", "feels stiff and rehearsed", "never convinces",
                "is embarrassingly bad", "is painful to watch", "sleepwalks through every scene"],
        "neg_mild": ["is a little uneven", "is somewhat flat", "is hit and miss",
                     "could have used more energy"],
    },
    "plot": {
        "nouns": ["the plot", "the story", "the script", "the central mystery", "the premise",
                  "the screenplay"],
        "pos": ["is clever and tightly built", "keeps surprising you", "holds together beautifully",
                "is gripping from the first scene", "is smart and original",
                "pays off every setup"],
        "pos_mild": ["is reasonably engaging", "is serviceable", "is easy to follow",
                     "has a few nice twists"],
        "neg": ["is full of holes", "makes little sense", "is painfully predictable",
                "is a tangled mess", "is lazy and derivative", "collapses under its own twists"],
        "neg_mild": ["is a bit thin", "is somewhat familiar", "has a few loose ends",
                     "borrows too freely"],
    },
    "pacing": {
        "nouns": ["the pacing", "the editing", "the first act", "the middle hour",
                  "the running time", "the opening"],
        "pos": ["moves briskly", "never drags", "is perfectly judged", "flies by",
                "is tight and propulsive", "keeps the tension humming"],
        "pos_mild": ["is mostly fine", "is steady enough", "moves along", "is acceptable"],
        "neg": ["drags badly", "feels endless", "is sluggish and dull", "crawls along",
                "is a slog", "tests your patience"],
        "neg_mild": ["drags a little", "is slightly slow", "sags in places",
                     "could lose ten minutes"],
    },
    "soundtrack": {
        "nouns": ["the soundtrack", "the score", "the music", "the theme song", "the sound design"],
        "pos": ["is gorgeous", "lifts every scene", "is haunting in the best way",
                "is an absolute treat", "is wonderfully evocative", "gave me chills"],
        "pos_mild": ["is pleasant", "is fitting", "is nice enough", "works well"],
        "neg": ["is intrusive and loud", "is grating", "drowns out the dialogue",
                "is shrill and annoying", "is badly mixed", "is relentlessly irritating"],
        "neg_mild": ["is forgettable", "is a bit generic", "is slightly overbearing",
                     "is rather bland"],
    },
    "dialogue": {
        "nouns": ["the dialogue", "the writing", "the banter", "the voiceover"],
        "pos": ["is sharp and witty", "sparkles", "sounds like real people talking",
                "is full of great lines", "crackles with energy", "is endlessly quotable"],
        "pos_mild": ["is natural enough", "is decent", "has its moments", "is fine"],
        "neg": ["is clunky", "is stilted and awkward", "is full of groan-worthy lines",
                "is cringe-inducing", "is laughably bad", "is nothing but exposition"],
        "neg_mild": ["is a bit on the nose", "is sometimes clunky", "is uneven",
                     "tries slightly too hard"],
    },
    "cinematography": {
        "nouns": ["the cinematography", "the camerawork", "the photography", "the visual style",
                  "the lighting"],
        "pos": ["is stunning", "is breathtaking", "makes every frame look like a painting",
                "is gorgeous", "is bold and inventive", "is simply beautiful"],
        "pos_mild": ["is competent", "looks nice", "is handsome", "is polished"],
        "neg": ["is murky and flat", "is ugly and cheap-looking", "is shaky to the point of nausea",
                "is drab and lifeless", "is an eyesore", "is incoherent"],
        "neg_mild": ["is a little dark", "is plain", "is somewhat dull", "is a touch too shaky"],
    },
    "ending": {
        "nouns": ["the ending", "the finale", "the last act", "the climax", "the final scene"],
        "pos": ["is deeply satisfying", "lands perfectly", "is wonderful", "is unforgettable",
                "brought me to tears", "is a knockout"],
        "pos_mild": ["works", "is fair enough", "ties things up neatly", "is reasonable"],
        "neg": ["is a letdown", "falls apart", "is rushed and confusing", "is infuriating",
                "ruins everything before it", "is a cheap cop-out"],
        "neg_mild": ["is a bit abrupt", "feels slightly rushed", "is a touch too neat",
                     "is underwhelming"],
    },
    "humour": {
        "nouns": ["the humour", "the comedy", "the comic timing", "the slapstick", "the wit"],
        "pos": ["is genuinely funny", "lands every time", "had me laughing out loud",
                "is hilarious", "is delightfully silly", "is clever and warm"],
        "pos_mild": ["is amusing", "raises a few smiles", "is gentle and fun", "mostly works"],
        "neg": ["falls flat", "is painfully unfunny", "misses every time", "is crude and tired",
                "is embarrassing", "is grating and juvenile"],
        "neg_mild": ["is hit and miss", "is a bit forced", "is sparse", "is rather tame"],
    },
    "effects": {
        "nouns": ["the special effects work", "the effects work", "the CGI", "the creature design",
                  "the action choreography", "the stunt work"],
        "pos": ["is dazzling", "is seamless", "looks fantastic", "is spectacular",
                "is jaw-dropping", "is thrilling"],
        "pos_mild": ["is decent", "is convincing enough", "looks fine", "is solid"],
        "neg": ["looks cheap", "is laughably fake", "is a mess", "looks unfinished",
                "is an embarrassment", "is distracting and ugly"],
        "neg_mild": ["is a bit dated", "is sometimes unconvincing", "looks rubbery in places",
                     "is patchy"],
    },
}

# Adjectives for "<Title> is a/an <adj> <genre>."
OVERALL_ADJ = {
    1: ["delightful", "gripping", "moving", "charming", "smart", "exhilarating",
        "beautifully made", "wonderful", "thoroughly entertaining", "heartfelt",
        "confident", "rewarding", "terrific", "memorable"],
    0: ["dreary", "tedious", "muddled", "lifeless", "clumsy", "exhausting", "forgettable",
        "dreadful", "joyless", "pointless", "misjudged", "tiresome", "shoddy", "hollow"],
}

# Full sentences that state the overall verdict.
VERDICTS = {
    1: ["I loved every minute of it.", "Highly recommended.",
        "One of the best films I have seen this year.", "An absolute joy.", "Go see it.",
        "It is a small masterpiece.", "I would happily watch it again.", "A real gem.",
        "Worth a look.", "A pleasant surprise.", "Good fun overall.",
        "I enjoyed it more than I expected.", "Recommended, with minor reservations.",
        "I left the cinema grinning.", "Well worth the ticket.", "Do not miss it.",
        "Easily four stars.", "I will be recommending it to everyone I know.",
        "A lovely way to spend an evening.", "It earns its praise."],
    0: ["Avoid it.", "A complete waste of time.", "One of the worst films I have seen this year.",
        "I walked out halfway through.", "A total mess.", "I want those two hours back.",
        "Hard to recommend.", "A disappointment overall.", "Not worth the ticket price.",
        "I was bored more than entertained.", "Skip it and wait for something better.",
        "I left the cinema annoyed.", "Save your money.", "Do not bother.",
        "One star, and that is generous.", "I cannot recommend it to anyone.",
        "A dull way to spend an evening.", "It does not deserve the hype."],
}

# Verb phrases for "<Title> ..." that state the overall verdict.
OVERALL_VP = {
    1: ["is well worth your time", "is a joy from start to finish", "works wonderfully",
        "won me over completely", "is a genuine crowd-pleaser", "deserves a big audience",
        "never loses its grip", "stayed with me for days", "is never boring",
        "does not put a foot wrong", "is not to be missed", "hits almost every note"],
    0: ["is a chore to sit through", "never comes to life", "is not worth your time",
        "left me completely cold", "is a crashing bore", "deserves to be forgotten",
        "never finds its footing", "was forgotten the moment it ended",
        "is not remotely entertaining", "does not work on any level",
        "is best avoided", "misses almost every note"],
}

# Openers that frame the review (before a clause about the film).
OPENERS = {
    1: ["I went in with low expectations, but {t} won me over.",
        "I was ready to dislike {t}, yet it proved me wrong.",
        "I had my doubts about {t}, and I am glad I was wrong.",
        "Nobody told me {t} would be this good.",
        "{t} is the surprise of the season.",
        "I did not expect much from {t}, but it is excellent."],
    0: ["I really wanted to like {t}, but it never comes together.",
        "On paper {t} sounds great, but the result is a letdown.",
        "I had high hopes for {t}, and they were dashed.",
        "The trailer for {t} promised far more than the film delivers.",
        "{t} is the disappointment of the season.",
        "I expected a lot from {t}, and got very little."],
}

GENRE_FANS = {
    1: ["Fans of the {g} will have a great time.", "If you like a good {g}, this one is a treat.",
        "Even people who hate the {g} will enjoy this.",
        "It reminded me why I love the {g}."],
    0: ["Even die-hard fans of the {g} will find little to enjoy here.",
        "If you like a good {g}, look elsewhere.",
        "This gives the {g} a bad name.",
        "It reminded me why I gave up on the {g}."],
}

CONJ_CONTRAST = ["but", "yet", "though", "but honestly"]

# Noun phrases that read oddly after "Great ..." in t_list.
NOT_IN_LISTS = {"the running time", "the middle hour", "the first act", "the opening"}

# What other people supposedly called the film (used to set up a reversal).
REPUTATION = {
    1: ["a masterpiece", "a triumph", "a gem", "a crowd-pleaser", "a classic", "a must-see"],
    0: ["a disaster", "a mess", "a bore", "a failure", "a flop", "a write-off"],
}
SOURCES = ["Critics", "My friends", "Half the internet", "The reviews", "Everyone at work",
           "The festival crowd"]

# Hedged admissions that precede the overall verdict.
HEDGES = {
    1: ["{t} is far from perfect", "{t} is not flawless", "{t} has its problems",
        "{t} is not for everyone", "{t} will not change your life"],
    0: ["{t} is not without its charms", "{t} has a few good moments", "{t} is not a total loss",
        "{t} is handsomely produced", "{t} clearly had a lot of money behind it"],
}


# ---------------------------------------------------------------------------
# Composition helpers
# ---------------------------------------------------------------------------

def article(word):
    return "an" if word[0].lower() in "aeiou" else "a"


def cap(s):
    return s[0].upper() + s[1:]


class Writer:
    def __init__(self, rng):
        self.r = rng

    def pick(self, seq):
        return self.r.choice(seq)

    def aspects(self, n):
        return self.r.sample(sorted(ASPECTS), n)

    def clause(self, aspect, polarity, mild=False):
        """'the score is gorgeous' for polarity 1, a negative remark for 0."""
        bank = ASPECTS[aspect]
        key = ("pos" if polarity else "neg") + ("_mild" if mild else "")
        return "%s %s" % (self.pick(bank["nouns"]), self.pick(bank[key]))

    def title(self):
        return self.pick(TITLES)

    def genre(self):
        return self.pick(GENRES)

    def summary(self, label):
        adj = self.pick(OVERALL_ADJ[label])
        return "%s is %s %s %s." % (self.title(), article(adj), adj, self.genre())

    def verdict(self, label):
        return self.pick(VERDICTS[label])

    # --- templates; each returns one review for the given label -------------

    def t_short(self, label):
        s = self.summary(label)
        if self.r.random() < 0.5:
            s += " " + self.verdict(label)
        return s

    def t_two_aspects(self, label):
        a, b = self.aspects(2)
        s = "%s and %s." % (cap(self.clause(a, label)), self.clause(b, label, self.r.random() < 0.3))
        return s + " " + self.verdict(label)

    def t_contrast(self, label):
        # Concede the opposite side (mild or strong), then the overall side wins.
        a, b = self.aspects(2)
        concede = self.clause(a, 1 - label, mild=self.r.random() < 0.5)
        main = self.clause(b, label)
        s = "%s, %s %s." % (cap(concede), self.pick(CONJ_CONTRAST), main)
        roll = self.r.random()
        if roll < 0.45:
            s += " " + self.verdict(label)
        elif roll < 0.8:
            s += " Overall, %s %s." % (self.title(), self.pick(OVERALL_VP[label]))
        else:
            s += " " + self.summary(label)
        return s

    def t_even_though(self, label):
        a = self.aspects(1)[0]
        concede = self.clause(a, 1 - label, mild=self.r.random() < 0.6)
        lead = self.pick(["Even though", "Although", "While", "Granted,"])
        if lead == "Granted,":
            return "Granted, %s, but %s %s." % (concede, self.title(), self.pick(OVERALL_VP[label]))
        return "%s %s, %s %s." % (lead, concede, self.title(), self.pick(OVERALL_VP[label]))

    def t_opener(self, label):
        s = self.pick(OPENERS[label]).format(t=self.title())
        n = self.r.choice([1, 2])
        parts = [self.clause(a, label) for a in self.aspects(n)]
        s += " " + cap(" and ".join(parts)) + "."
        if self.r.random() < 0.4:
            s += " " + self.verdict(label)
        return s

    def t_genre_fans(self, label):
        g = self.genre()
        s = "%s %s." % (self.title(), self.pick(OVERALL_VP[label]))
        if self.r.random() < 0.5:
            s += " " + cap(self.clause(self.aspects(1)[0], label)) + "."
        return s + " " + self.pick(GENRE_FANS[label]).format(g=g)

    def t_mixed_long(self, label):
        # Two remarks on the losing side, two on the winning side, then the verdict.
        a, b, c, d = self.aspects(4)
        first = "%s and %s" % (self.clause(a, 1 - label, mild=True), self.clause(b, 1 - label, mild=self.r.random() < 0.5))
        second = "%s and %s" % (self.clause(c, label), self.clause(d, label))
        s = "Sure, %s, but %s." % (first, second)
        return s + " " + self.verdict(label)

    def t_first_then(self, label):
        # "the first act drags, but the finale is wonderful" style, order of events.
        early = self.pick(["the first act", "the opening", "the first half hour", "the setup"])
        late = self.pick(["the finale", "the last act", "the second half", "the ending"])
        if label:
            e = self.pick(ASPECTS["pacing"]["neg"] + ASPECTS["pacing"]["neg_mild"])
            l = self.pick(ASPECTS["ending"]["pos"])
        else:
            e = self.pick(["is promising", "is intriguing", "starts strong", "is lively",
                           "sets up something good"])
            l = self.pick(ASPECTS["ending"]["neg"] + ["goes nowhere", "throws it all away"])
        s = "In %s, %s %s, but %s %s." % (self.title(), early, e, late, l)
        if self.r.random() < 0.6:
            s += " " + self.verdict(label)
        return s

    def t_list(self, label):
        a, b, c = self.aspects(3)
        nouns = [self.pick([n for n in ASPECTS[x]["nouns"] if n not in NOT_IN_LISTS])[4:]
                 for x in (a, b, c)]
        if label:
            head = self.pick(["Great", "Lovely", "Excellent", "Wonderful", "Superb"])
        else:
            head = self.pick(["Poor", "Weak", "Dreadful", "Lazy", "Sloppy"])
        s = "%s %s, %s and %s." % (head, nouns[0], nouns[1], nouns[2])
        return s + " " + self.summary(label)

    def t_reversal(self, label):
        src = self.pick(SOURCES)
        s = "%s called %s %s, but %s." % (src, self.title(), self.pick(REPUTATION[1 - label]),
                                         self.pick(["they are wrong", "I disagree",
                                                    "I see it differently", "I cannot agree"]))
        roll = self.r.random()
        if roll < 0.5:
            s += " " + cap(self.clause(self.aspects(1)[0], label)) + "."
        if roll > 0.3:
            s += " " + self.verdict(label)
        return s

    def t_hedge(self, label):
        s = self.pick(HEDGES[label]).format(t=self.title())
        adj = self.pick(OVERALL_ADJ[label])
        s += ", %s it is %s %s %s in the end." % (self.pick(["but", "yet", "but still"]),
                                                 article(adj), adj, self.genre())
        if self.r.random() < 0.4:
            s += " " + cap(self.clause(self.aspects(1)[0], label)) + "."
        return s

    TEMPLATES = ["t_reversal", "t_hedge",
                 "t_short", "t_two_aspects", "t_contrast", "t_contrast", "t_even_though",
                 "t_opener", "t_genre_fans", "t_mixed_long", "t_first_then", "t_list"]

    def review(self, label):
        return getattr(self, self.pick(self.TEMPLATES))(label)


def generate(rng, label, count, seen):
    w = Writer(rng)
    out = []
    while len(out) < count:
        text = w.review(label)
        n = len(text.split())
        if not (MIN_WORDS <= n <= MAX_WORDS) or text in seen:
            continue
        assert "\t" not in text and "\n" not in text
        seen.add(text)
        out.append(text)
    return out


def write(path, rows):
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("sentence\tlabel\n")
        for text, label in rows:
            f.write("%s\t%d\n" % (text, label))


def main():
    rng = random.Random(SEED)
    seen = set()  # only membership tests: no dependence on set ordering
    total = TRAIN_PER_LABEL + DEV_PER_LABEL
    pos = generate(rng, 1, total, seen)
    neg = generate(rng, 0, total, seen)
    train = [(t, 1) for t in pos[:TRAIN_PER_LABEL]] + [(t, 0) for t in neg[:TRAIN_PER_LABEL]]
    dev = [(t, 1) for t in pos[TRAIN_PER_LABEL:]] + [(t, 0) for t in neg[TRAIN_PER_LABEL:]]
    rng.shuffle(train)
    rng.shuffle(dev)
    write(os.path.join(HERE, "reviews-train.tsv"), train)
    write(os.path.join(HERE, "reviews-dev.tsv"), dev)
    print("wrote %d train and %d dev reviews" % (len(train), len(dev)))


if __name__ == "__main__":
    main()
