"""How one demo example is made: an intent (what the customer wants) rendered as a customer message in a channel
and a tone, and an answer in the house style filled from the fact sheet.

Everything is drawn from ``random.Random`` seeded per intent and example number, so the file is the same on every
run and adding an intent does not change the others. Variety comes from combining independent choices: the
phrasing of the ask and its details, the channel (chat, email, SMS), the tone, typos, and for the answer the
opening sentence, the explanation, each step's wording, optional steps and the closing line.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from string import Formatter

SYSTEM_PROMPT = ("You are Brightwater Gas & Electric's customer support assistant. Be accurate, warm and concise; "
                 "give concrete next steps; never invent account details.")

# ---------------------------------------------------------------- slot values shared by every intent

FIRST_NAMES = ["Sam", "Priya", "Tom", "Aisha", "Gareth", "Mei", "Olu", "Hannah", "Dave", "Zofia", "Callum", "Rosa",
               "Imran", "Bethan", "Kwame", "Lucy", "Marek", "Fiona", "Raj", "Ellie", "Jon", "Grace", "Connor", "Nadia",
               "Pete", "Sian", "Yusuf", "Moira", "Dan", "Amira", "Ruth", "Liam", "Chloe", "Ibrahim", "Kath", "Ade"]
SURNAMES = ["Patel", "Jones", "Okafor", "Murray", "Williams", "Nowak", "Evans", "Khan", "Taylor", "Byrne", "Hughes",
            "Mensah", "Campbell", "Lewis", "Ali", "Walsh", "Davies", "Reid", "Chen", "Morgan"]
COMMON_SLOTS: dict[str, list] = {
    "amount": ["£180", "£212", "£245", "£280", "£310", "£356", "£420", "£390", "£265", "£198"],
    "usual": ["£90", "£110", "£75", "£120", "£95", "£130", "£85"],
    "dd_old": ["85", "60", "72", "110", "95", "130"],
    "dd_new": ["140", "118", "150", "175", "160", "205"],
    "credit": ["£150", "£300", "£220", "£410", "£95", "£260"],
    "debt": ["£640", "£480", "£920", "£1,150", "£730", "£560"],
    "weeks": ["2", "3", "4", "5", "6"],
    "months": ["2", "3", "4", "5"],
    "hours": ["3", "5", "6", "9", "12"],
    "years": ["2", "4", "6", "8", "11", "15"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"],
    "payday": ["1st", "15th", "20th", "25th", "28th", "10th"],
    "room": ["kitchen", "hallway", "utility room", "cellar", "garage", "living room", "under the stairs"],
    "who": ["my mum", "my dad", "my nan", "my grandad", "my partner", "my son", "my daughter", "my neighbour"],
    "calls": ["3", "4", "5", "three", "four"],
}

# ---------------------------------------------------------------- the intent


@dataclass
class Intent:
    """One thing customers ask, with everything needed to write many different examples of it.

    Templates use ``{slot}`` for details (``{amount}``, ``{name}``) and ``{fact_key}`` for fact-sheet values
    (``{power_cut_line}``). ``facts`` are the checked facts every answer gives: the generator refuses an intent
    whose rendered answer leaves one out or gives another one, so checks built from references stay fair.
    A step written as ``"?text"`` (or a list starting with one) is optional.
    """

    key: str
    tags: list[str]
    facts: list[str]
    asks: list[str]
    opens: list[str]
    steps: list[list[str] | str]
    closes: list[str]
    leads: list[str] = field(default_factory=lambda: [""])
    kind: str = "problem"  # problem | howto | good_news | urgent | upset: which general openers fit
    slots: dict[str, list] = field(default_factory=dict)
    contexts: list[str] = field(default_factory=list)  # extra sentences a customer might add
    vague: list[str] = field(default_factory=list)  # first messages that need a question back
    clarify: list[str] = field(default_factory=list)  # the assistant's question back
    n: int = 20
    lead_first: bool = False  # urgent answers: the key instruction is the first sentence


GENERAL_OPENS = {
    "problem": ["I'm sorry about this; let's get it sorted.", "Sorry to hear that, and thanks for letting us know.",
                "I'm sorry, that's not what you want to be dealing with.", "Thanks for getting in touch about this.",
                "Sorry for the trouble; here's what to do."],
    "howto": ["Happy to help with that.", "Good question.", "Thanks for asking.", "Happy to explain.",
              "Glad you asked."],
    "good_news": ["Happy to help.", "Great question.", "Happy to help with that.", "Thanks for asking."],
    "urgent": [""],
    "upset": ["I'm sorry, I can hear how frustrating this has been.", "I'm really sorry; you shouldn't have had to "
              "chase this.", "I understand why you're upset, and I'm sorry.", "Thank you for telling us, and I'm "
              "sorry it's come to this."],
}
ANGRY_OPENS = ["I'm sorry this has been so frustrating.", "I understand why you're annoyed, and I'm sorry.",
               "I'm sorry; that's a fair reason to be fed up.", "I hear you, and I'm sorry for the hassle."]
WORRIED_OPENS = ["Please try not to worry; this can be sorted.", "I understand this is worrying, and we'll help.",
                 "Don't worry, you're doing the right thing by asking."]
GENERAL_CLOSES = ["", "", "If anything's unclear, just reply here.", "I hope that helps.",
                  "Let me know if you'd like help with any of these steps.", "Reply here if you get stuck."]

# ---------------------------------------------------------------- customer side: channels, tone, typos

GREETINGS = ["Hi,", "Hello,", "Dear Brightwater,", "Hi there,", "Good morning,", "Hello Brightwater team,",
             "To whom it may concern,", "Hi team,"]
SIGNOFFS = ["Thanks,\n{name}", "Kind regards,\n{name} {surname}", "Many thanks,\n{name}", "Regards,\n{surname}",
            "Cheers,\n{name}", "Best wishes,\n{name} {surname}", "Thank you,\n{name}"]
ANGRY_LINES = ["This is really not good enough.", "Absolutely fed up with this.", "Sort it out please.",
               "I'm sick of chasing this.", "Not impressed at all.", "This is the last straw."]
WORRIED_LINES = ["I'm really worried about this.", "Not sure what to do.", "Any help appreciated, I'm a bit stressed.",
                 "Please help, I'm anxious about it."]
POLITE_LINES = ["Hope you can help.", "Many thanks in advance.", "Thanks for your help.", "Appreciate any advice.",
                "Would be grateful for some guidance."]
CHAT_PREFIXES = ["", "", "", "hi ", "hello, ", "hey ", "quick question - ", "hi there. "]
GENERAL_CONTEXTS = ["I've been with you {years} years.", "Sorry if this is the wrong place to ask.",
                    "I couldn't find the answer on your website.", "Tried the app but got nowhere."]
# Which tones a customer plausibly takes for each kind of intent (nobody is angry asking how tariffs work).
TONES_BY_KIND = {"problem": ["neutral", "neutral", "polite", "angry", "worried"],
                 "upset": ["neutral", "angry", "angry", "worried"],
                 "urgent": ["neutral", "neutral", "worried"],
                 "howto": ["neutral", "neutral", "polite"],
                 "good_news": ["neutral", "polite"]}
SMS_SWAPS = {"you": "u", "your": "ur", "please": "pls", "thanks": "thx", "are": "r", "because": "cos",
             "tomorrow": "tmrw", "to": "2", "for": "4", "tonight": "2nite", "message": "msg", "know": "no"}
MISSPELLINGS = {"electricity": "elecricity", "received": "recieved", "definitely": "definately",
                "separate": "seperate", "tomorrow": "tommorow", "because": "becuase", "account": "acount",
                "payment": "payemnt", "address": "adress", "believe": "beleive", "until": "untill",
                "meter": "meater", "appointment": "appointmant", "estimated": "estimeted", "weird": "wierd"}


def typos(text: str, rng: random.Random, rate: float) -> str:
    """Real typos: common misspellings, dropped apostrophes, swapped or dropped letters, in a few words."""
    words = text.split(" ")
    for i, w in enumerate(words):
        core = w.strip(".,!?").lower()
        if core in MISSPELLINGS and rng.random() < 0.6:
            words[i] = w.lower().replace(core, MISSPELLINGS[core])
        elif "'" in w and rng.random() < 0.5:
            words[i] = w.replace("'", "")
        elif len(core) > 4 and core.isalpha() and rng.random() < rate:
            j = rng.randrange(1, len(w) - 2) if len(w) > 3 else 1
            if rng.random() < 0.5:
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
            else:
                words[i] = w[:j] + w[j + 1:]
    return " ".join(words)


def smsify(text: str, rng: random.Random) -> str:
    words = []
    for w in text.split(" "):
        core = w.strip(".,!?").lower()
        words.append(w.lower().replace(core, SMS_SWAPS[core]) if core in SMS_SWAPS and rng.random() < 0.7
                     else w)
    return " ".join(words).replace("I'm", "im").replace("I've", "ive")


def lower_start(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != "I " and not text.startswith("I'") else text


def _join(parts: list[str]) -> str:
    """Sentences joined the way people write them: a full stop added where a sentence had no end mark."""
    out = ""
    for part in (p.strip() for p in parts if p and p.strip()):
        if out and out[-1] not in ".?!":
            out += "."
        out = f"{out} {part}" if out else part
    return out


def customer_message(ask: str, intent: Intent, channel: str, tone: str, values: dict, rng: random.Random,
                     second: str = "") -> str:
    """The customer's message for ``ask`` (already filled) in a channel and a tone; ``second`` is another
    phrasing of the same question that an email may add."""
    extra = [second] if channel == "email" and second and rng.random() < 0.5 else []
    if intent.contexts and rng.random() < 0.45:
        extra.append(fill(rng.choice(intent.contexts), values))
    elif rng.random() < 0.15:
        extra.append(fill(rng.choice(GENERAL_CONTEXTS), values))
    line = {"angry": ANGRY_LINES, "worried": WORRIED_LINES, "polite": POLITE_LINES}.get(tone)
    if line and rng.random() < 0.8:
        extra.append(rng.choice(line))
    if channel == "email":
        body = _join([e[:1].upper() + e[1:] for e in [ask] + extra])
        return f"{rng.choice(GREETINGS)}\n\n{body}\n\n{fill(rng.choice(SIGNOFFS), values)}"
    if channel == "sms":
        text = smsify(_join([ask] + extra[:1]), rng)
        text = text.rstrip(".") if rng.random() < 0.6 else text
        return typos(lower_start(text), rng, 0.08) if rng.random() < 0.5 else text
    prefix = rng.choice(CHAT_PREFIXES)
    text = prefix + (lower_start(ask) if prefix and rng.random() < 0.6 else ask)
    text = _join([text] + extra)
    if rng.random() < 0.35:
        text = lower_start(text).rstrip(".")
    if rng.random() < 0.35:
        text = typos(text, rng, 0.06)
    if tone == "angry" and rng.random() < 0.3:
        text = text.rstrip(".!") + "!!"
    return text.strip()


# ---------------------------------------------------------------- filling templates


def fill(template: str, values: dict) -> str:
    """``template.format`` with a clear error naming a missing key (a typo in an intent must fail loudly)."""
    missing = [name for _, name, _, _ in Formatter().parse(template) if name and name not in values]
    if missing:
        raise KeyError(f"template {template!r} needs {missing}")
    return template.format(**values)


def draw_slots(intent: Intent, rng: random.Random) -> dict:
    values = {k: rng.choice(v) for k, v in COMMON_SLOTS.items()}
    values.update({k: rng.choice(v) for k, v in intent.slots.items()})
    values["name"], values["surname"] = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
    return values


def _pick(option: list[str] | str, rng: random.Random) -> str | None:
    """One wording of a step; None when an optional step is left out."""
    choices = option if isinstance(option, list) else [option]
    text = rng.choice(choices)
    if text.startswith("?"):
        return text[1:] if rng.random() < 0.55 else None
    return text


def answer(intent: Intent, channel: str, tone: str, values: dict, rng: random.Random, *,
           follow_up: bool = False) -> str:
    """The answer in the house style: one empathetic sentence, the explanation, numbered steps, a closing line."""
    opens = list(intent.opens)
    general = GENERAL_OPENS[intent.kind]
    if tone == "angry" and intent.kind != "urgent":
        general = ANGRY_OPENS
    elif tone == "worried" and intent.kind in ("problem", "upset"):
        general = general + WORRIED_OPENS
    share = 0.3 if tone == "angry" and intent.kind != "urgent" else 0.65  # an angry customer hears an apology
    opener = rng.choice(opens) if opens and (rng.random() < share or not general[0]) else rng.choice(general)
    if follow_up and intent.kind != "urgent":
        opener = rng.choice(["Good question.", "Yes, of course.", "Thanks, that helps.", "Sure.", ""]) + \
            (" " + opener if rng.random() < 0.3 else "")
    lead = rng.choice(intent.leads)
    head = " ".join(p for p in ((lead, opener) if intent.lead_first else (opener, lead)) if p).strip()
    picked = [(o, _pick(o, rng)) for o in intent.steps]
    if channel == "sms":  # a text message keeps the steps that matter and drops the extras
        picked = [(o, s) for o, s in picked if not _optional(o)]
    steps = [s for _, s in picked if s]
    close = rng.choice(intent.closes + GENERAL_CLOSES[:2]) if channel != "sms" else ""
    if not close and channel == "email" and rng.random() < 0.5:
        close = rng.choice(GENERAL_CLOSES[2:])
    lines = [fill(head, values)] + [f"{i}. {fill(s, values)}" for i, s in enumerate(steps, 1)]
    if close:
        lines.append(fill(close, values))
    text = "\n".join(lines)
    if channel == "email" and rng.random() < 0.7:
        text = rng.choice([f"Hi {values['name']}, thanks for your email.", f"Hello {values['name']},",
                           "Thanks for your email.", f"Dear {values['name']},"]) + "\n" + text
    return re.sub(r"[ \t]+", " ", text).strip()


def _optional(option) -> bool:
    choices = option if isinstance(option, list) else [option]
    return all(c.startswith("?") for c in choices)
