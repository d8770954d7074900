"""Grounding for sales: customers and deals named the way people name them, resolved in the asker's own
scope through the core services: what is said now is looked for among the asker's own records.

A customer is found by code or by name (rapidfuzz WRatio, per character for Chinese). A deal is found by
its OP-n reference, else by the words of its name and its customer's name, in English or Chinese ("the
hospital deal" is the deal whose customer is a 医院 or whose name says hospital; "the Acme renewal"),
typos forgiven. Several matches are offered as a choice; a mention that matches nothing is reported with
the words that were said — never silently replaced by another deal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from rapidfuzz import fuzz, process, utils

from bot.grounding import CJK_CHARS, CJK_RUN, Found, Grounded, Mention
from bot.parsing import PERCENT, PROBABILITY_NUMBER, entities_of
from core.auth import Actor
from core.container import Core
from core.errors import NotFound, ValidationFailed
from core.schemas import OpportunityOut

CJK = re.compile(f"[{CJK_CHARS}]")
LATIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9&'’.\-]*")
CODE_LIKE = re.compile(r"(?<![A-Za-z0-9-])([A-Za-z]{1,12}-?\d{1,12}(?:-[A-Za-z0-9]{1,12})*)(?![A-Za-z0-9-])")
CLAUSE = re.compile(r"[,.;:!?，。；：！？、\n()（）\"“”‘’\[\]]+")
OP_REF = re.compile(r"(?<![A-Za-z0-9])OP\s*[-#]?\s*(\d{1,9})(?![0-9])", re.IGNORECASE)

# --- customers -----------------------------------------------------------------------------------------

# Scores are rapidfuzz WRatio (0–100). A name typed on its own may be rougher than one inside a sentence,
# where every word is a candidate and chance similarities must not count.
WHOLE_CUTOFF = 75.0
MESSAGE_CUTOFF = 80.0
WORD_MATCH = 85.0
PAIR_BUDGET = 400_000
CLEAR_MARGIN = 10.0
MAX_CHOICES = 5
MAX_FRAGMENTS = 300
# Trade words many customer and deal names share: alone they say nothing about which one is meant.
TRADE_WORDS = frozenset((
    "appliance", "appliances", "home", "kitchen", "kitchens", "electric", "electrical", "electronics",
    "supply", "supplies", "store", "stores", "shop", "online", "retail", "retailer", "distribution",
    "distributor", "distributors", "wholesale", "trading", "market", "mall", "center", "centre", "plaza",
    "team", "service", "services", "new", "line", "product", "products", "showroom", "promotion",
    "promotions", "price", "pricing", "contract", "washing", "machine", "machines", "dishwasher", "fridge",
    "hotel", "restaurant", "district", "city", "corp", "corporation", "co", "company", "ltd", "limited",
    "inc", "group", "llc", "plc", "gmbh",
))
STOP_WORDS = TRADE_WORDS | frozenset((
    "a", "an", "the", "and", "or", "but", "with", "without", "to", "of", "for", "on", "at", "in", "by",
    "from", "about", "into", "via", "per", "as", "is", "are", "was", "were", "be", "been", "i", "we",
    "he", "she", "they", "it", "me", "my", "our", "your", "his", "her", "their", "them", "us", "you",
    "this", "that", "these", "those", "there", "here", "today", "yesterday", "tomorrow", "tonight",
    "morning", "afternoon", "evening", "week", "month", "quarter", "year", "day", "next", "last",
    "visit", "visited", "visiting", "met", "meet", "meeting", "call", "called", "phone", "phoned",
    "emailed", "saw", "see", "show", "tell", "give", "discuss", "discussed", "talked", "talk", "spoke",
    "about", "regarding", "re", "renewal", "deal", "deals", "order", "orders", "quote", "quotation",
    "send", "sent", "step", "steps", "follow", "up", "followup", "log", "logged", "please", "pipeline",
    "overview", "customer", "customers", "client", "move", "moved", "update", "set", "mark", "change",
    "stage", "amount", "close", "closing", "date", "won", "lost", "negotiation", "proposal",
    "mr", "mrs", "ms", "dr", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "monday", "tuesday",
    "wednesday", "thursday", "friday", "saturday", "sunday",
    # Words of asking for something, not names.
    "want", "need", "like", "pls", "plz", "opportunity", "opportunities", "create", "open", "add", "list",
    "will", "going", "plan", "planned", "planning", "schedule", "scheduled",
))
FILLER_WORDS = frozenset(("a", "an", "the", "and", "of", "for", "to", "at", "in", "on", "with"))
CJK_STOP = frozenset((
    "公司", "有限", "有限公司", "集团", "股份", "责任", "今天", "昨天", "明天", "后天", "拜访", "拜访了",
    "客户", "下一步", "续约", "报价", "聊了", "讨论", "一下", "看看", "概况", "销售", "商机", "工单",
    "谈判", "阶段", "推进", "金额", "本季度", "我们", "他们", "一起", "见了", "发报价", "周一", "周二",
    "周三", "周四", "周五", "周六", "周日", "下周", "下周一", "下周二", "下周三", "下周四", "下周五",
    "家电", "电器", "商行", "连锁", "超市", "商城", "广场", "批发", "卖场", "专卖", "专卖店", "门店",
    "商场", "厨电", "家居", "采购", "促销", "返利", "年度", "合同", "订单", "价格", "样品", "展厅",
))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A customer (or anything with a code and a name) and how well it matched."""

    code: str
    name: str
    score: float


def fragments(text: str, limit: int = MAX_FRAGMENTS) -> list[str]:
    """Pieces of a message that could be a name: runs of 1–4 words, and 2–8 characters of Chinese
    (shortest first, so a long message loses its least likely pieces when cut to `limit`)."""
    found: list[str] = []
    for clause in CLAUSE.split(text):
        for run in CJK_RUN.findall(clause):
            for size in range(2, min(8, len(run)) + 1):
                for start in range(len(run) - size + 1):
                    piece = run[start : start + size]
                    if piece not in CJK_STOP:
                        found.append(piece)
        for chunk in CJK_RUN.split(clause):
            words = LATIN_WORD.findall(chunk)
            for size in range(1, 5):
                for start in range(len(words) - size + 1):
                    group = words[start : start + size]
                    if all(word.casefold().strip(".'’") in STOP_WORDS for word in group):
                        continue
                    piece = " ".join(group)
                    if sum(char.isalnum() for char in piece) >= 3:
                        found.append(piece)
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda piece: len(piece.split()) if not CJK.search(piece) else (len(piece) + 1) // 2)
    return unique[:limit]


def whole_words_match(piece: str, name: str) -> bool:
    """Every distinctive word of a Latin fragment is (nearly) a whole word of the name: WRatio alone would
    find 'line' inside 'Online'."""
    if CJK.search(piece):
        return True
    words = [word for word in utils.default_process(name).split() if word]
    wanted = [word for word in utils.default_process(piece).split() if word not in STOP_WORDS]
    return all(any(fuzz.ratio(word, other) >= WORD_MATCH for other in words) for word in wanted)


def find_customers(names: Sequence[tuple[str, str]] | Sequence[list[str]], query: str, *,
                   whole: bool) -> list[Candidate]:
    """Customers matching `query`, best first.

    `whole`: the query is itself a name or code (an entity, an answer); otherwise it is a message in
    which a name may appear. A code is decisive (exactly as stored when typed alone, or a code-like
    token such as CUS-0012 anywhere); names are matched with rapidfuzz's WRatio, per character for
    Chinese (which has no spaces to split words on).
    """
    by_code = {code: name for code, name in names}
    text = query.strip()
    if not text or not by_code:
        return []
    if text in by_code:
        return [Candidate(text, by_code[text], 100.0)]
    folded = {code.casefold(): code for code in by_code}
    coded = [folded[token.casefold()] for token in CODE_LIKE.findall(text) if token.casefold() in folded]
    # A code typed in capitals inside a sentence ("visited ACME today") is meant as the code.
    coded += [token for token in LATIN_WORD.findall(text) if token.isupper() and token in by_code]
    if coded:
        return [Candidate(code, by_code[code], 100.0) for code in dict.fromkeys(coded)]
    best: dict[str, float] = {}
    cutoff = WHOLE_CUTOFF if whole else MESSAGE_CUTOFF
    # A bounded amount of work per message, however many customers the actor sees.
    pieces = [text] if whole else fragments(text, max(20, min(MAX_FRAGMENTS, PAIR_BUDGET // len(by_code))))
    covered: dict[str, set[str]] = {}
    for piece in pieces:
        for name, score, code in process.extract(
            piece, by_code, scorer=fuzz.WRatio, processor=utils.default_process, limit=MAX_CHOICES * 2,
            score_cutoff=cutoff,
        ):
            if whole or whole_words_match(piece, name):
                best[code] = max(best.get(code, 0.0), float(score))
                covered.setdefault(code, set()).update(name_parts_covered(piece, name))
    # More of a name said is more likely that name: "Acme Kitchen" is Acme Kitchen Supplies, not Acme Corp.
    scored = {code: score + coverage_bonus(covered.get(code, set())) for code, score in best.items()}
    return sorted((Candidate(code, by_code[code], score) for code, score in scored.items()),
                  key=lambda item: (-item.score, item.name))


def name_parts_covered(piece: str, name: str) -> set[str]:
    """Words (or, for Chinese, character positions) of `name` that `piece` says."""
    if CJK.search(piece):
        start = name.find(piece)
        return {f"#{index}" for index in range(start, start + len(piece))} if start >= 0 else set()
    words = [word for word in utils.default_process(name).split() if word not in FILLER_WORDS]
    said = utils.default_process(piece).split()
    return {word for word in words if any(fuzz.ratio(word, other) >= WORD_MATCH for other in said)}


def coverage_bonus(parts: set[str]) -> float:
    """Up to 20 points for saying more than one word (or two characters) of a name."""
    chars = sum(part.startswith("#") for part in parts)
    words = len(parts) - chars
    return float(min(20, 10 * max(0, words - 1) + 5 * max(0, chars - 2)))


def pick(candidates: list[Candidate]) -> list[Candidate]:
    """One clear winner, or the close contenders (empty when nothing matched)."""
    if len(candidates) <= 1:
        return candidates
    top, second = candidates[0], candidates[1]
    if top.score - second.score >= CLEAR_MARGIN or (top.score >= 100.0 > second.score):
        return [top]
    return [item for item in candidates if top.score - item.score < CLEAR_MARGIN][:MAX_CHOICES]


# --- deals ---------------------------------------------------------------------------------------------

MAX_DEALS = 200
# Words that say what kind of thing a deal or its customer is, in both languages: "the hospital deal"
# finds 仁济医院's deal, "医院那单" finds Beijing International Hospital's.
CONCEPTS: tuple[tuple[frozenset[str], tuple[str, ...]], ...] = (
    (frozenset({"hospital", "hospitals"}), ("医院",)),
    (frozenset({"school", "schools"}), ("学校", "中学", "小学", "学院", "职业学院")),
    (frozenset({"kindergarten", "nursery"}), ("幼儿园",)),
    (frozenset({"college", "university"}), ("学院", "大学")),
    (frozenset({"library"}), ("图书馆",)),
    (frozenset({"canteen", "cafeteria"}), ("食堂",)),
    (frozenset({"clinic", "health"}), ("卫生服务中心", "诊所", "卫生院")),
    (frozenset({"nursing", "senior", "elderly"}), ("养老院", "敬老院", "护理院")),
    (frozenset({"fire"}), ("消防",)),
    (frozenset({"government"}), ("政府", "政务")),
    (frozenset({"renewal", "renew"}), ("续约", "续签")),
    (frozenset({"dishwasher", "dishwashers"}), ("洗碗机",)),
    (frozenset({"ac", "aircon", "air-conditioner", "conditioners", "conditioner"}), ("空调",)),
    (frozenset({"heater", "heaters"}), ("热水器",)),
    (frozenset({"maintenance"}), ("维保", "维护", "保养")),
    (frozenset({"showroom"}), ("展厅",)),
    (frozenset({"retrofit", "upgrade"}), ("改造", "升级")),
    (frozenset({"stock", "stocking"}), ("备货",)),
    (frozenset({"promotion"}), ("促销",)),
    (frozenset({"kitchen"}), ("厨房", "厨电")),
    (frozenset({"dormitory", "dorm"}), ("宿舍",)),
    (frozenset({"ward", "wards"}), ("病房",)),
    (frozenset({"classroom", "classrooms"}), ("教室",)),
)
DEAL_STOP = STOP_WORDS - TRADE_WORDS - {"renewal"} | frozenset((
    "deal", "deals", "opportunity", "oppty", "opp", "one", "its", "now", "push", "bump", "needs", "analysis",
    "qualification", "negotiating", "closed", "ish", "around", "probability", "prob", "chance", "chances",
    "percent", "pct", "expected", "due", "end", "beginning", "start", "mid", "early", "late", "k", "m",
    "because", "since", "reason", "competitor", "instead", "actually", "make", "makes", "rather", "so",
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "january",
    "february", "march", "april", "june", "july", "august", "september", "october", "november",
    "december", "no", "yes", "ok", "okay", "not", "just", "also", "then", "what", "which", "how",
    "win", "lose", "lost", "signed", "back", "again", "still", "got", "get", "put", "take", "let", "let's",
))
# Chinese words of asking and pointing that are not part of a deal's name.
DEAL_CJK_STOP = re.compile(
    "那单|这单|那个|这个|那笔|这笔|单子|商机|项目|生意|机会|改成|改为|改到|标成|标记为|标记成|标为|设为|设成|"
    "推进到|推进|推到|进到|进入|阶段|金额|概率|赢率|成交日期|预计|更新|一下|帮我|请|把|将|给|的|了|吧|呢|"
    "我们|我的|客户|那家|这家|那边|标记|改|到|为")
NAMING_NOUN = re.compile(r"\b(?:deal|deals|opportunity|oppty|opp|renewal|order|contract|project)\b"
                         r"|单|商机|项目|合同|续约", re.IGNORECASE)
# Words of company names (not of what is sold): they only break ties between deals.
DEAL_TRADE_WORDS = frozenset((
    "appliance", "appliances", "home", "electric", "electrical", "electronics", "supply", "supplies", "store",
    "stores", "shop", "online", "retail", "retailer", "distribution", "distributor", "distributors",
    "wholesale", "trading", "market", "mall", "center", "centre", "plaza", "team", "service", "services",
    "new", "line", "product", "products", "district", "city", "corp", "corporation", "co", "company", "ltd",
    "limited", "inc", "group", "llc", "plc", "gmbh", "international",
))
CJK_PAIR = 2
CJK_MATCH_SHARE = 0.5


class DealLike(Protocol):
    """What grounding needs of a deal."""

    @property
    def ref(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def customer_name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class DealWords:
    """The words of a message that may name a deal, and how they were said."""

    said: str
    latin: tuple[str, ...]
    cjk: tuple[str, ...]
    names_something: bool

    @property
    def empty(self) -> bool:
        """Nothing that could name a deal."""
        return not self.latin and not self.cjk


def deal_refs(text: str) -> list[str]:
    """OP-n references in a message, normalised ('op 6' → 'OP-6'), in order."""
    return list(dict.fromkeys(f"OP-{int(match.group(1))}" for match in OP_REF.finditer(text)))


def _blank(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        for index in range(max(0, start), min(len(chars), end)):
            chars[index] = " "
    return "".join(chars)


def mentions(text: str) -> list[DealWords]:
    """Per clause, the words that may name a deal: without references, stages, amounts, dates,
    probabilities and the words of asking ('mark the hospital deal as won' → 'hospital')."""
    spans = [(item.start, item.end) for item in entities_of(text, "stage", "amount", "date", "time")]
    spans += [match.span() for pattern in (OP_REF, PERCENT, PROBABILITY_NUMBER)
              for match in pattern.finditer(text)]
    cleaned = _blank(text, spans)
    found: list[DealWords] = []
    for index, clause in enumerate(CLAUSE.split(cleaned)):
        latin = [word.strip(".'’-") for word in re.findall(r"[A-Za-z][A-Za-z'’\-]*", clause)]
        latin = [word for word in latin if len(word) >= 2 and word.casefold() not in DEAL_STOP]
        cjk = [run for run in CJK_RUN.findall(DEAL_CJK_STOP.sub(" ", clause))
               if len(run) >= 2 and run not in CJK_STOP]
        if not latin and not cjk:
            continue
        said = " ".join([*latin, *cjk]) if not cjk or not latin else " ".join(latin) + " " + "".join(cjk)
        capitalised = any(word[:1].isupper() for word in latin)
        # Words in the request itself, a name, or a deal noun name a deal; stray words in a later clause
        # ("…, they agreed") do not.
        named = index == 0 or bool(cjk) or capitalised or NAMING_NOUN.search(clause) is not None
        found.append(DealWords(said=said.strip(), latin=tuple(word.casefold() for word in latin),
                             cjk=tuple(cjk), names_something=named))
    return found


@lru_cache(maxsize=4096)
def _expanded(text: str) -> tuple[frozenset[str], str]:
    """A deal's Latin words and Chinese text, each with the other language's words for the same concepts."""
    words = {word.casefold() for word in re.findall(r"[A-Za-z][A-Za-z\-]*", text)}
    chinese = "".join(CJK_RUN.findall(text))
    for english, zh in CONCEPTS:
        if words & english or any(term in chinese for term in zh):
            words |= english
            chinese += "|" + "|".join(zh)
    return frozenset(words), chinese


def _spellings(words: Sequence[str], vocabulary: frozenset[str]) -> dict[str, frozenset[str]]:
    """For each word said, the words of the deals it may be (itself, or one a typo away): one pass over
    all the deals' words per word said, instead of one per deal."""
    found: dict[str, frozenset[str]] = {}
    for word in words:
        near = {word} & vocabulary
        if len(word) >= 4:
            near |= {other for other, _score, _index in process.extract(
                word, [item for item in vocabulary if len(item) >= 4], scorer=fuzz.ratio,
                score_cutoff=WORD_MATCH, limit=None)}
        found[word] = frozenset(near)
    return found


def _cjk_hit(run: str, chinese: str) -> bool:
    if run in chinese:
        return True
    pairs = {run[index : index + CJK_PAIR] for index in range(len(run) - CJK_PAIR + 1)}
    return bool(pairs) and sum(pair in chinese for pair in pairs) / len(pairs) >= CJK_MATCH_SHARE


def score_deal(mention: DealWords, deal: DealLike,
               spellings: dict[str, frozenset[str]] | None = None) -> tuple[int, int]:
    """(distinctive words matched, trade words matched) of a mention against a deal and its customer."""
    words, chinese = _expanded(f"{deal.name} {deal.customer_name}")
    near = spellings if spellings is not None else _spellings(mention.latin, words)
    distinctive = trade = 0
    for word in mention.latin:
        if near[word] & words:
            if word in DEAL_TRADE_WORDS:
                trade += 1
            else:
                distinctive += 1
    for run in mention.cjk:
        if _cjk_hit(run, chinese):
            distinctive += 1
    return distinctive, trade


def rank_deals(deals: Sequence[DealLike], text: str) -> tuple[list[DealLike], str, bool]:
    """The deals a message names by words, the words as said, and whether it named anything at all.

    The clause naming a deal best decides; a deal counts only when a distinctive word of it was said
    (a trade word such as 'appliances' alone names nothing), and ties are broken by trade words.
    """
    best: list[DealLike] = []
    best_score = (0, 0)
    said, named = "", False
    for mention in mentions(text):
        if mention.empty:
            continue
        vocabulary = frozenset().union(*(_expanded(f"{deal.name} {deal.customer_name}")[0] for deal in deals))
        spellings = _spellings(mention.latin, vocabulary)
        scored = [(score_deal(mention, deal, spellings), deal) for deal in deals]
        top = max((score for score, _deal in scored), default=(0, 0))
        if top[0] > 0 and top > best_score:
            best_score, said = top, mention.said
            best = [deal for score, deal in scored if score == top]
        elif not best and mention.names_something and not said:
            said = mention.said
        named = named or mention.names_something
    return best, said, named or bool(best)


def reference(found: Grounded[OpportunityOut]) -> str | None:
    """The OP-n the person gave, when they named the deal by its reference."""
    refs = deal_refs(found.said)
    return refs[0] if refs and refs[0] == found.said else None


async def deal_by_ref(core: Core, actor: Actor, reference: str) -> OpportunityOut | None:
    """A deal the actor may see, by OP-n; None for one that does not exist or is not theirs (the same)."""
    try:
        return await core.sales.get_opportunity(actor, reference)
    except (NotFound, ValidationFailed):
        return None


async def ground_deal(core: Core, actor: Actor, text: str, *,
                      among: Sequence[str] = ()) -> Grounded[OpportunityOut]:
    """The deal(s) a message names, in the actor's own open deals (a manager's: the team's), in the shape
    every grounding answers in (bot/grounding.py): one, several, none (naming what was said) or unsaid.

    An OP-n reference is decisive (a deal the actor may not see is reported as not found, like one that
    does not exist). Otherwise the words decide; `among`, the references just offered as choices, are
    preferred when the words fit several.
    """
    refs = deal_refs(text)
    if refs:
        found = await deal_by_ref(core, actor, refs[0])
        return Grounded.counted([found] if found else [], refs[0], Mention.NAME)
    deals = (await core.sales.list_opportunities(actor, open_only=True, limit=MAX_DEALS)).items
    matched, said, named = rank_deals(deals, text)
    if among and len(matched) > 1:
        matched = [deal for deal in matched if deal.ref in among] or matched
    if not named:
        return Grounded(Found.UNSAID)
    return Grounded.counted([deal for deal in deals if deal in matched], said, Mention.NAME)
