"""Benchmark core.kb_index on a synthetic bilingual home-appliance knowledge base.

Usage: .venv/bin/python bench/kb_search.py [--articles 100000] [--queries 300] [--seed 42]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from core.kb_index import KbDocument, KbIndex


@dataclass(frozen=True, slots=True)
class Symptom:
    key: str
    en: str
    en_syn: str
    zh: str
    zh_syn: str


@dataclass(frozen=True, slots=True)
class Appliance:
    prefix: str
    en: str
    en_syn: str
    zh: str
    slug: str
    symptoms: tuple[Symptom, ...]
    details: tuple[tuple[str, str], ...]
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Query:
    kind: str
    text: str
    product_code: str | None
    relevant: frozenset[int]


LEAK = Symptom("leak", "leaking water", "dripping water", "漏水", "渗水")
NOISE = Symptom("noise", "making a loud noise", "rattling loudly", "噪音大", "异响")
SMELL = Symptom("smell", "smells bad", "has a musty odour", "有异味", "有臭味")
START = Symptom("start", "does not start", "will not power on", "不启动", "无法启动")
DRAIN = Symptom("drain", "not draining", "won't drain", "不排水", "排水不畅")
COOL = Symptom("cool", "not cooling", "not cold", "不制冷", "制冷差")
HEAT = Symptom("heat", "not heating", "no hot water", "不加热", "没有热水")

APPLIANCES = (
    Appliance(
        "WM",
        "washing machine",
        "washer",
        "洗衣机",
        "washing-machine",
        (
            LEAK,
            NOISE,
            SMELL,
            START,
            DRAIN,
            Symptom("spin", "not spinning", "won't spin", "不脱水", "甩干不了"),
            Symptom("vibration", "shaking violently", "vibrating badly", "震动厉害", "抖动厉害"),
            Symptom("door", "door will not open", "door stuck shut", "门打不开", "门锁住了"),
        ),
        (
            ("from the door seal", "门封处"),
            ("from the bottom", "底部"),
            ("near the detergent drawer", "洗涤剂盒"),
            ("at the back panel", "背板"),
            ("around the drain pump", "排水泵"),
            ("at the inlet hose", "进水管"),
            ("inside the drum", "滚筒内"),
            ("at the control panel", "控制面板"),
        ),
        tuple(f"E{n}" for n in range(10, 36)) + tuple(f"F{n:02d}" for n in range(1, 13)),
    ),
    Appliance(
        "DW",
        "dishwasher",
        "dish washer",
        "洗碗机",
        "dishwasher",
        (
            LEAK,
            NOISE,
            SMELL,
            START,
            DRAIN,
            Symptom("clean", "leaves dishes dirty", "does not clean dishes", "洗不干净", "餐具不干净"),
            Symptom("dry", "not drying dishes", "dishes stay wet", "烘干效果差", "餐具不干"),
            Symptom("fill", "not filling with water", "no water coming in", "不进水", "进水慢"),
        ),
        (
            ("at the spray arm", "喷淋臂"),
            ("under the door", "门下方"),
            ("in the sump", "集水槽"),
            ("at the filter", "过滤网"),
            ("near the drain hose", "排水管"),
            ("at the inlet valve", "进水阀"),
            ("in the base tray", "底盘"),
            ("at the detergent dispenser", "洗涤剂盒"),
        ),
        (*tuple(f"E{n}" for n in range(1, 26)), "I20", "I30"),
    ),
    Appliance(
        "RF",
        "refrigerator",
        "fridge",
        "冰箱",
        "refrigerator",
        (
            LEAK,
            NOISE,
            SMELL,
            START,
            COOL,
            Symptom("frost", "ice buildup", "frost on the wall", "结霜严重", "结冰严重"),
            Symptom("light", "light not working", "lamp stays off", "灯不亮", "照明灯不亮"),
            Symptom("freezer", "freezer too warm", "freezer not freezing", "冷冻室不冷", "冷冻不结冰"),
        ),
        (
            ("in the fresh food compartment", "冷藏室"),
            ("in the freezer", "冷冻室"),
            ("at the door seal", "门封条"),
            ("under the crisper drawer", "果蔬抽屉"),
            ("behind the back panel", "背板"),
            ("at the ice maker", "制冰机"),
            ("near the compressor", "压缩机"),
            ("at the water dispenser", "饮水机"),
        ),
        tuple(f"E{n}" for n in range(1, 10)) + tuple(f"F{n}" for n in range(1, 10)) + ("H1", "H2", "H3"),
    ),
    Appliance(
        "AC",
        "air conditioner",
        "AC",
        "空调",
        "air-conditioner",
        (
            LEAK,
            NOISE,
            SMELL,
            START,
            COOL,
            Symptom("heat", "not heating", "not warming the room", "不制热", "制热差"),
            Symptom(
                "remote", "remote not responding", "controller does nothing", "遥控器失灵", "遥控器没反应"
            ),
            Symptom("fan", "fan not blowing", "no airflow", "不出风", "出风很小"),
        ),
        (
            ("at the indoor unit", "室内机"),
            ("at the outdoor unit", "室外机"),
            ("at the air filter", "滤网"),
            ("at the condensate pipe", "冷凝水管"),
            ("at the louvres", "导风板"),
            ("at the display", "显示屏"),
            ("near the wall bracket", "支架"),
            ("at the refrigerant pipe", "冷媒管"),
        ),
        tuple(f"E{n}" for n in range(1, 10)) + tuple(f"P{n}" for n in range(0, 10)) + ("H6", "F1", "F2"),
    ),
    Appliance(
        "WH",
        "water heater",
        "boiler",
        "热水器",
        "water-heater",
        (
            LEAK,
            NOISE,
            START,
            HEAT,
            Symptom("pressure", "low water pressure", "weak flow", "水压低", "出水小"),
            Symptom("temperature", "water too hot", "scalding water", "水温过高", "水太烫"),
            Symptom("ignite", "will not ignite", "burner does not light", "不点火", "打不着火"),
            Symptom("trip", "trips the breaker", "keeps tripping", "跳闸", "漏电保护跳闸"),
        ),
        (
            ("at the safety valve", "安全阀"),
            ("at the tank bottom", "内胆底部"),
            ("at the heating element", "加热管"),
            ("at the thermostat", "温控器"),
            ("at the gas valve", "燃气阀"),
            ("at the outlet pipe", "出水管"),
            ("near the igniter", "点火器"),
            ("at the flue", "烟道"),
        ),
        tuple(f"E{n}" for n in range(0, 10)) + tuple(f"C{n}" for n in range(0, 6)) + ("A1", "A2", "A3"),
    ),
)

CONDITIONS = (
    ("during the spin cycle", "脱水时"),
    ("after a few minutes", "运行几分钟后"),
    ("on hot programmes", "高温时"),
    ("at night", "夜间"),
    ("after moving house", "搬家后"),
    ("since a power cut", "停电后"),
)
MEANINGS = (
    ("drain timeout", "排水超时"),
    ("water inlet fault", "进水故障"),
    ("door lock failure", "门锁故障"),
    ("motor fault", "电机故障"),
    ("heating element failure", "加热故障"),
    ("temperature sensor failure", "温度传感器故障"),
    ("communication error", "通讯故障"),
    ("water level sensor fault", "水位传感器故障"),
    ("overheating protection", "过热保护"),
    ("ignition failure", "点火失败"),
    ("fan motor fault", "风机故障"),
    ("low refrigerant", "冷媒不足"),
    ("leak detected", "漏水保护"),
)
STEPS_EN = (
    "Unplug the appliance for five minutes and restart it.",
    "Check the hoses for kinks or cracks.",
    "Clean the filter and remove any debris.",
    "Make sure the appliance stands level.",
    "Inspect the seal for tears and replace it if damaged.",
    "Check the wiring harness connectors.",
    "Test the component with a multimeter.",
    "Book a technician visit if the problem remains.",
    "Update the firmware from the service menu.",
    "Check the circuit breaker and the socket.",
)
STEPS_ZH = (
    "断电五分钟后重新启动。",
    "检查管路是否弯折或破裂。",
    "清洗过滤网并清除杂物。",
    "确认机器放置水平。",
    "检查密封圈是否破损，必要时更换。",
    "检查线束插头是否松动。",
    "用万用表检测相关部件。",
    "问题仍未解决请预约上门维修。",
    "在服务菜单中升级固件。",
    "检查断路器和插座。",
)
TYPO_OPS = ("delete", "swap", "substitute", "double")


def typo(word: str, rng: random.Random) -> str:
    """Introduce one realistic keyboard slip into a word of five or more letters."""
    if len(word) < 5 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(TYPO_OPS)
    if op == "delete":
        return word[:i] + word[i + 1 :]
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice("aeiourstln") + word[i + 1 :]


def code_variant(code: str, rng: random.Random) -> str:
    """Spell an error code the way customers do: E13, e13, e-13 or E 13."""
    letters = code.rstrip("0123456789")
    digits = code[len(letters) :]
    return rng.choice((code, code.lower(), f"{letters.lower()}-{digits}", f"{letters} {digits}"))


class Corpus:
    """Synthetic articles plus attribute indexes so each query knows its relevant articles."""

    def __init__(self, n: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.docs: list[KbDocument] = []
        self.by_code: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        self.by_symptom: dict[tuple[str, str, int, str], list[int]] = defaultdict(list)
        self.by_condition: dict[tuple[str, str, int, int, str], list[int]] = defaultdict(list)
        self.by_generic: dict[tuple[str, str, int, str], list[int]] = defaultdict(list)
        self.code_docs: list[tuple[Appliance, str, str, str]] = []
        self.symptom_docs: list[tuple[Appliance, str, Symptom, int, int, str]] = []
        self.models = [
            (a, f"{a.prefix}{m}") for a in APPLIANCES for m in self.rng.sample(range(1000, 9999), 120)
        ]
        self._generate(n)

    def _add(self, **kwargs: object) -> int:
        doc_id = len(self.docs) + 1
        self.docs.append(KbDocument(id=doc_id, **kwargs))  # type: ignore[arg-type]
        return doc_id

    def _generate(self, n: int) -> None:
        rng = self.rng
        # About a tenth of the knowledge base is error-code articles, one per model, code and language.
        for appliance, model in self.models:
            for code in rng.sample(appliance.codes, 8):
                meaning_en, meaning_zh = rng.choice(MEANINGS)
                for lang in ("en", "zh") if rng.random() < 0.5 else ("en",):
                    if len(self.docs) >= n // 10:
                        break
                    doc_id = self._code_article(appliance, model, code, lang, meaning_en, meaning_zh)
                    self.by_code[(model, code, lang)].append(doc_id)
                    self.code_docs.append((appliance, model, code, lang))
        seen: set[tuple[str, str, int, int, str]] = set()
        while len(self.docs) < n:
            appliance, model = rng.choice(self.models)
            symptom = rng.choice(appliance.symptoms)
            detail = rng.randrange(len(appliance.details))
            condition = rng.randrange(len(CONDITIONS))
            lang = "zh" if rng.random() < 0.4 else "en"
            key = (model, symptom.key, detail, condition, lang)
            if key in seen:
                continue
            seen.add(key)
            doc_id = self._symptom_article(appliance, model, symptom, detail, condition, lang)
            self.by_symptom[(model, symptom.key, detail, lang)].append(doc_id)
            self.by_condition[key].append(doc_id)
            self.by_generic[(appliance.prefix, symptom.key, detail, lang)].append(doc_id)
            self.symptom_docs.append((appliance, model, symptom, detail, condition, lang))

    def _code_article(
        self, appliance: Appliance, model: str, code: str, lang: str, meaning_en: str, meaning_zh: str
    ) -> int:
        steps = self.rng.sample(STEPS_ZH if lang == "zh" else STEPS_EN, 3)
        if lang == "zh":
            return self._add(
                code=f"KB-{model}-{code}-ZH",
                title=f"{model}{appliance.zh}显示{code}：{meaning_zh}",
                symptoms=f"面板显示{code}，机器停止运行。",
                solution="".join(steps),
                lang="zh",
                product_code=model,
                category=f"{appliance.slug}/error-codes",
            )
        return self._add(
            code=f"KB-{model}-{code}",
            title=f"{model} {appliance.en} error {code}: {meaning_en}",
            symptoms=f"The display shows {code} and the programme stops.",
            solution=" ".join(steps),
            lang="en",
            product_code=model,
            category=f"{appliance.slug}/error-codes",
        )

    def _symptom_article(
        self, appliance: Appliance, model: str, symptom: Symptom, detail: int, condition: int, lang: str
    ) -> int:
        rng = self.rng
        d_en, d_zh = appliance.details[detail]
        c_en, c_zh = CONDITIONS[condition]
        number = len(self.docs) + 1
        if lang == "zh":
            return self._add(
                code=f"KB-{model}-{number}",
                title=f"{model}{appliance.zh}{d_zh}{symptom.zh}",
                symptoms=f"{c_zh}{appliance.zh}{d_zh}{symptom.zh}，用户反馈多次出现。",
                solution="".join(rng.sample(STEPS_ZH, 4)),
                lang="zh",
                product_code=model,
                category=f"{appliance.slug}/{symptom.key}",
            )
        return self._add(
            code=f"KB-{model}-{number}",
            title=f"{model} {appliance.en} {symptom.en} {d_en}",
            symptoms=f"The {appliance.en} is {symptom.en} {d_en} {c_en}. Customers report it repeatedly.",
            solution=" ".join(rng.sample(STEPS_EN, 4)),
            lang="en",
            product_code=model,
            category=f"{appliance.slug}/{symptom.key}",
        )

    # -- queries -----------------------------------------------------------------------------

    def queries(self, per_kind: int) -> list[Query]:
        makers: dict[str, Callable[[], Query | None]] = {
            "code": self._code_query,
            "typo": self._typo_query,
            "synonym": self._synonym_query,
            "chinese": self._chinese_query,
            "mixed": self._mixed_query,
            "generic": self._generic_query,
        }
        out: list[Query] = []
        for maker in makers.values():
            made = 0
            while made < per_kind:
                query = maker()
                if query is not None:
                    out.append(query)
                    made += 1
        return out

    def _symptom_relevant(
        self, model: str, symptom: Symptom, detail: int, condition: int | None, lang: str
    ) -> frozenset[int]:
        if condition is None:
            return frozenset(self.by_symptom[(model, symptom.key, detail, lang)])
        return frozenset(self.by_condition[(model, symptom.key, detail, condition, lang)])

    def _code_query(self) -> Query | None:
        appliance, model, code, lang = self.rng.choice(self.code_docs)
        if lang != "en":
            return None
        spelled = code_variant(code, self.rng)
        text = self.rng.choice(
            (
                f"error {spelled} on my {model} {appliance.en}",
                f"my {model} {appliance.en_syn} shows {spelled}",
                f"{appliance.en} {model} code {spelled} what do i do",
            )
        )
        return Query("code", text, None, frozenset(self.by_code[(model, code, "en")]))

    def _pick_symptom(self, lang: str) -> tuple[Appliance, str, Symptom, int, int] | None:
        appliance, model, symptom, detail, condition, doc_lang = self.rng.choice(self.symptom_docs)
        return None if doc_lang != lang else (appliance, model, symptom, detail, condition)

    def _typo_query(self) -> Query | None:
        picked = self._pick_symptom("en")
        if picked is None:
            return None
        appliance, model, symptom, detail, condition = picked
        with_condition = self.rng.random() < 0.5
        text = f"{appliance.en} {symptom.en} {appliance.details[detail][0]}"
        if with_condition:
            text += " " + CONDITIONS[condition][0]
        words = text.split()
        candidates = [i for i, w in enumerate(words) if len(w) >= 5]
        for i in self.rng.sample(candidates, min(2, len(candidates))):
            words[i] = typo(words[i], self.rng)
        relevant = self._symptom_relevant(model, symptom, detail, condition if with_condition else None, "en")
        return Query("typo", " ".join(words), model, relevant)

    def _synonym_query(self) -> Query | None:
        picked = self._pick_symptom("en")
        if picked is None:
            return None
        appliance, model, symptom, detail, _condition = picked
        text = f"my {appliance.en_syn} is {symptom.en_syn} {appliance.details[detail][0]}"
        return Query("synonym", text, model, self._symptom_relevant(model, symptom, detail, None, "en"))

    def _chinese_query(self) -> Query | None:
        picked = self._pick_symptom("zh")
        if picked is None:
            return None
        appliance, model, symptom, detail, _condition = picked
        phrase = symptom.zh_syn if self.rng.random() < 0.5 else symptom.zh
        text = f"{appliance.zh}{appliance.details[detail][1]}{phrase}怎么办"
        return Query("chinese", text, model, self._symptom_relevant(model, symptom, detail, None, "zh"))

    def _generic_query(self) -> Query | None:
        """No product known: any model's article about the same fault counts as a hit."""
        lang = "zh" if self.rng.random() < 0.4 else "en"
        picked = self._pick_symptom(lang)
        if picked is None:
            return None
        appliance, _model, symptom, detail, _condition = picked
        if lang == "zh":
            text = f"{appliance.zh}{appliance.details[detail][1]}{symptom.zh_syn}"
        else:
            words = f"my {appliance.en_syn} is {symptom.en_syn} {appliance.details[detail][0]}".split()
            typo_at = self.rng.choice([i for i, w in enumerate(words) if len(w) >= 5] or [0])
            words[typo_at] = typo(words[typo_at], self.rng)
            text = " ".join(words)
        relevant = frozenset(self.by_generic[(appliance.prefix, symptom.key, detail, lang)])
        return Query("generic", text, None, relevant)

    def _mixed_query(self) -> Query | None:
        appliance, model, code, lang = self.rng.choice(self.code_docs)
        if lang != "zh":
            return None
        text = self.rng.choice(
            (
                f"我的{model}{appliance.zh}显示{code}",
                f"{model}{appliance.zh}报{code.lower()}怎么办",
                f"{appliance.zh} {model} 故障码{code}",
            )
        )
        return Query("mixed", text, None, frozenset(self.by_code[(model, code, "zh")]))


def rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    rss_start = rss_mb()
    t0 = time.perf_counter()
    corpus = Corpus(args.articles, args.seed)
    queries = corpus.queries(max(1, args.queries // 6))
    gen_s = time.perf_counter() - t0
    rss_corpus = rss_mb()

    gc.collect()
    t0 = time.perf_counter()
    index = KbIndex()
    for doc in corpus.docs:
        index.add(doc)
    build_s = time.perf_counter() - t0
    rss_index = rss_mb()
    zh = sum(d.lang == "zh" for d in corpus.docs)
    print(f"articles {len(index):,} ({zh:,} zh), generated in {gen_s:.1f}s")
    print(f"build {build_s:.1f}s ({build_s / max(1, len(index)) * 1e6:.0f} us/article)")
    print(
        f"peak RSS: start {rss_start:.0f} MiB, with corpus {rss_corpus:.0f} MiB, "
        f"with index {rss_index:.0f} MiB (index ~{rss_index - rss_corpus:.0f} MiB)"
    )

    for query in queries[:10]:
        index.search(query.text, product_code=query.product_code)  # warm caches and the allocator

    latencies: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    hits: dict[str, int] = defaultdict(int)
    misses: dict[str, list[str]] = defaultdict(list)
    for query in queries:
        start, start_cpu = time.perf_counter(), time.process_time()
        result = index.search(query.text, limit=3, product_code=query.product_code)
        # CPU time alongside wall time tells the engine's cost apart from a busy shared machine.
        cpu[query.kind].append((time.process_time() - start_cpu) * 1000)
        latencies[query.kind].append((time.perf_counter() - start) * 1000)
        if query.relevant & {h.id for h in result}:
            hits[query.kind] += 1
        else:
            misses[query.kind].append(query.text)

    header = ("kind", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "cpu p95", "top-3")
    print("\n{:<9}{:>5}{:>9}{:>9}{:>9}{:>9}{:>9}{:>8}".format(*header))
    rows = [(kind, values, cpu[kind], hits[kind]) for kind, values in latencies.items()]
    every_wall = [v for values in latencies.values() for v in values]
    every_cpu = [v for values in cpu.values() for v in values]
    rows.append(("all", every_wall, every_cpu, sum(hits.values())))
    for kind, values, cpu_values, hit_count in rows:
        print(
            f"{kind:<9}{len(values):>5}{percentile(values, 0.5):>9.1f}{percentile(values, 0.95):>9.1f}"
            f"{percentile(values, 0.99):>9.1f}{max(values):>9.1f}{percentile(cpu_values, 0.95):>9.1f}"
            f"{hit_count / len(values):>8.0%}"
        )
    for kind, texts in misses.items():
        print(f"missed {kind}: " + "; ".join(texts[:3]))


if __name__ == "__main__":
    main()
