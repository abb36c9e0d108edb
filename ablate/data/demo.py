"""The synthetic demo corpus: a deterministic Traditional-Chinese healthcare NER set in three genres.

Every ablate command runs on it offline (quickstart study, tests, demo). Lexicons and
templates were written for this project; nothing here is copied from ROCLING.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ablate.data.readers import Sentence, write_conll, write_jsonl
from ablate.errors import UserError

GENRES = ("ft", "sm", "wa")
SPLITS = (("train", 70), ("dev", 15), ("test", 15))  # percent of `sentences`
MIN_SENTENCES = 20  # below this a dev or test split could miss a genre
EMPTY_RATE = 0.10  # sentences without any entity
LONG_RATE = 0.03  # chained sentences longer than LONG_MIN characters
LONG_MIN = 150

# Slot name -> (entity type, surface forms). "TYPE.sub" names a subset used where only
# some forms read naturally (a short symptom right after a body part: 胃+痛).
# Forms mix lengths 1-8, half-width Latin (MRI, B12) and full-width characters (Ｃ型, ３個月).
_LEXICON: dict[str, tuple[str, tuple[str, ...]]] = {
    name: (name.split(".")[0], tuple(words.split()))
    for name, words in {
        "BODY": "胃 肝 腎 肺 腰 眼睛 頭部 心臟 肝臟 腎臟 大腸 膝蓋 關節 皮膚 血管 神經 骨骼 甲狀腺 十二指腸 "
        "攝護腺 視網膜 腦下垂體 膽囊 胰臟 脊椎 牙齦 喉嚨",
        "BODY.part": "胃 肚子 腰 膝蓋 肩膀 眼睛 喉嚨 胸口 牙齒 脖子 腳踝",
        "SYMP": "痛 癢 頭痛 咳嗽 發燒 頭暈 噁心 嘔吐 腹瀉 便秘 失眠 疲倦 胸悶 心悸 水腫 耳鳴 喉嚨痛 "
        "呼吸困難 食慾不振 視力模糊 皮膚紅疹 關節僵硬 體重減輕 手腳麻木 火燒心",
        "SYMP.short": "痛 痠痛 癢 腫脹 發炎 刺痛 悶痛 麻木 抽筋",
        "INST": "口罩 輪椅 針筒 血糖機 血壓計 內視鏡 導尿管 助聽器 呼吸器 拐杖 支架 心律調節器 隱形眼鏡 "
        "人工水晶體 胰島素筆 耳溫槍 持續性正壓呼吸器 護腰 ＡＥＤ 鼻胃管",
        "EXAM": "血糖檢查 抽血 驗尿 胃鏡 大腸鏡 超音波 心電圖 X光 MRI CT 核磁共振 電腦斷層 骨密度檢查 "
        "肝功能檢查 乳房攝影 子宮頸抹片 糞便潛血檢查 眼底檢查 肺功能測試 HbA1c檢驗 ＰＥＴ掃描",
        "CHEM": "葡萄糖 膽固醇 三酸甘油酯 尿酸 鈣 鈉 鐵 咖啡因 酒精 尼古丁 蛋白質 脂肪 反式脂肪 乳酸 "
        "荷爾蒙 雌激素 膠原蛋白 LDL膽固醇 塑化劑 ＰＭ２．５ 尿素氮 肌酸酐 多巴胺",
        "DISE": "糖尿病 高血壓 痛風 氣喘 肺炎 流感 中風 貧血 胃潰瘍 腎結石 骨質疏鬆症 失智症 憂鬱症 乳癌 "
        "大腸癌 肝硬化 B型肝炎 Ｃ型肝炎 COVID-19 異位性皮膚炎 帶狀皰疹 胃食道逆流 甲狀腺亢進 "
        "類風濕性關節炎 阿茲海默症 心肌梗塞",
        "DRUG": "阿斯匹靈 普拿疼 胰島素 抗生素 類固醇 制酸劑 降血壓藥 安眠藥 止痛藥 流感疫苗 二甲雙胍 "
        "克流感 抗組織胺 非類固醇消炎藥 硝化甘油 β阻斷劑 利尿劑 眼藥水 降血脂藥 ACE抑制劑",
        "SUPP": "維生素C 維生素Ｄ 維生素B12 維他命Ｅ 葉酸 魚油 鈣片 益生菌 葉黃素 膠原蛋白粉 綜合維他命 "
        "B群 輔酶Q10 薑黃素 蔓越莓錠 鐵劑 葡萄糖胺 乳清蛋白 紅麴",
        "TREAT": "復健 手術 化療 放療 洗腎 針灸 推拿 開刀 物理治療 心導管手術 胃繞道手術 冠狀動脈繞道手術 "
        "人工關節置換 放射治療 標靶治療 飲食控制 減重 熱敷 冰敷 心理諮商 血液透析 體外震波碎石術 雷射治療",
        "TIME.span": "三個月 半年 兩週 一年 三天 24小時 ３個月 五年 十天 ６週",
        "TIME.point": "每天早上 睡前 飯後 空腹時 早餐後 晚上",
        "TIME.stage": "更年期 青春期 懷孕期間 經期 產後",
    }.items()
}
ENTITY_TYPES = ("BODY", "SYMP", "INST", "EXAM", "CHEM", "DISE", "DRUG", "SUPP", "TREAT", "TIME")

# Templates per genre, `{SLOT}` filled from _LEXICON. The ambiguous characters 頭 (頭痛, 頭部
# vs 頭一次), 糖 (糖尿病, 葡萄糖 vs 吃糖), 心 (心臟 vs 心情) and 手 (手術 vs 手機) also occur outside
# entities, so a model must read context rather than memorise characters.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "ft": (
        "衛福部提醒，{DISE}患者若出現{SYMP}，應儘速就醫並接受{EXAM}。",
        "研究指出，長期服用{DRUG}可能增加{BODY}負擔，民眾切勿自行加量。",
        "醫師表示，{TREAT}療程約需{TIME.span}，期間應避免攝取{CHEM}。",
        "國健署統計，國內{DISE}人口逐年上升，近{TIME.span}新增病例超過三成。",
        "專家建議，{DISE}高風險族群應定期接受{EXAM}，及早發現{BODY}病變。",
        "一名六旬男子因{BODY.part}{SYMP.short}就醫，經{EXAM}確診為{DISE}。",
        "醫院引進新型{INST}，可協助醫師於{TREAT}中精準定位{BODY}。",
        "營養師指出，{SUPP}雖有助補充營養，但與{DRUG}併用時須先諮詢藥師。",
        "研究團隊發現，血液中{CHEM}濃度過高者，罹患{DISE}的機率明顯較高。",
        "該院統計，接受{TREAT}的病患中，約有一成在{TIME.span}內出現{SYMP}。",
        "食藥署提醒，{SUPP}並非藥品，不能取代{DISE}的正規治療。",
        "頭一次參與義診的醫師表示，許多長者{BODY.part}{SYMP.short}卻未曾就醫。",
        "主治醫師說明，使用{INST}前須先完成{EXAM}，確認{BODY}狀況穩定。",
        "院方表示，{DISE}病患出院後每隔{TIME.span}須回診追蹤，並依指示服用{DRUG}、{DRUG}等藥物。",
        "藥師提醒，{DRUG}應於{TIME.point}服用，以減少{BODY}不適。",
        "衛生局呼籲，民眾少吃糖並規律運動，可降低{DISE}與{DISE}的風險。",
    ),
    "sm": (
        "請問{BODY}一直{SYMP}是{DISE}嗎？",
        "最近{TIME.point}都在吃{SUPP}，這樣會傷{BODY}嗎～",
        "我媽有{DISE}，下禮拜要做{EXAM}，需要空腹嗎？",
        "醫生開了{DRUG}給我，可以跟{SUPP}一起吃嗎？謝謝～",
        "頭一次{SYMP}這麼嚴重，請問要看哪一科？",
        "{BODY.part}{SYMP.short}好幾天了～是不是要去做{EXAM}啊？",
        "小孩超愛吃糖，請問會不會得{DISE}？好擔心～",
        "請問做完{TREAT}，{TIME.span}後可以運動嗎？",
        "吃{DRUG}之後一直{SYMP}，這樣正常嗎？？",
        "想請問{INST}要去哪裡買比較便宜～",
        "請問{CHEM}太高要怎麼降？需要吃{DRUG}嗎？",
        "我爸{TIME.span}前開始{SYMP}，醫生說要{TREAT}，請問會很痛嗎？",
        "請問{SUPP}什麼時候吃效果最好？",
        "有人{TREAT}過嗎？{BODY}還會{SYMP}嗎～",
        "心情很差又{SYMP}，是{DISE}的徵兆嗎？",
    ),
    "wa": (
        "{DISE}是一種常見的慢性疾病，主要症狀包括{SYMP}與{SYMP}。",
        "{DRUG}是一種用於治療{DISE}的藥物，常見副作用為{SYMP}。",
        "{EXAM}是一種檢查方法，可用於評估{BODY}的結構與功能。",
        "{INST}是一種醫療器材，常用於{TREAT}或日常照護。",
        "{SUPP}是一種膳食補充品，主要成分為{CHEM}。",
        "{CHEM}是人體代謝的重要物質，濃度異常時可能引起{DISE}。",
        "{BODY}是人體的重要構造，{DISE}可能使其功能受損。",
        "{TREAT}是一種治療方式，通常用於{DISE}患者，療程約{TIME.span}。",
        "{DRUG}是一種口服藥物，通常於{TIME.point}服用，可緩解{SYMP}。",
        "{DISE}的診斷通常依據{EXAM}結果，並配合{SYMP}等臨床表現。",
        "{SYMP}是指一種不適的感覺，常見於{DISE}患者或{TIME.stage}婦女。",
        "{DRUG}屬於處方藥，使用前應接受{EXAM}，{TIME.stage}應避免使用。",
        "{SUPP}是一種營養補充品，缺乏時可能導致{SYMP}。",
        "{INST}是一種裝置，可於{EXAM}時協助觀察{BODY}。",
        "{TIME.stage}是指人生的特定階段，此時體內{CHEM}濃度會明顯變化。",
        "{DISE}是一種由{CHEM}代謝異常引起的疾病，患者常見{BODY}{SYMP.short}。",
    ),
}
_EMPTY: dict[str, tuple[str, ...]] = {
    "ft": (
        "記者今日在台北報導，相關單位表示將持續追蹤後續發展。",
        "該計畫預計明年上路，主管機關將於近期公布細節。",
        "頭一次舉辦的活動吸引上千名民眾參加，現場氣氛熱絡。",
        "市府表示，今年預算已編列完成，將依進度逐步執行。",
        "主辦單位指出，報名人數創下新高，明年將擴大舉辦。",
    ),
    "sm": (
        "謝謝大家的回覆～",
        "頭一次發文，請多多指教！",
        "有人知道這間診所星期六有開嗎？",
        "排隊排了好久，手機都快沒電了～",
        "今天心情超好，終於放假了！",
        "請問掛號可以線上掛嗎？",
    ),
    "wa": (
        "該詞源自拉丁文，原意為「整體」。",
        "此條目介紹的是一種歷史悠久的學術概念。",
        "頭一次出現此名稱的文獻可追溯至十九世紀。",
        "該學會成立於一九五零年，總部設於瑞士。",
        "此分類方式至今仍被廣泛使用。",
    ),
}
_CONNECTORS = {
    "ft": ("此外", "同時", "另外", "該院也指出"),
    "sm": ("而且", "還有", "然後", "另外想問"),
    "wa": ("此外", "另外", "一般而言", "在臨床上"),
}
_END = {"ft": "。", "sm": "？", "wa": "。"}
_SLOT = re.compile(r"\{([A-Z]+(?:\.[a-z]+)?)\}")

Piece = tuple[str, str | None]  # (text, entity type or None)


# Only Random.random() is promised the same stream across Python versions; choice() and
# randrange() are not, so every draw goes through it.
def _below(rng: random.Random, n: int) -> int:
    return min(int(rng.random() * n), n - 1)


def _pick(rng: random.Random, seq: tuple[str, ...]) -> str:
    return seq[_below(rng, len(seq))]


def _fill(rng: random.Random, template: str) -> list[Piece]:
    """A template with its slots filled: text pieces, entities carrying their type."""
    pieces: list[Piece] = []
    pos = 0
    for m in _SLOT.finditer(template):
        if m.start() > pos:
            pieces.append((template[pos : m.start()], None))
        etype, words = _LEXICON[m.group(1)]
        pieces.append((_pick(rng, words), etype))
        pos = m.end()
    if pos < len(template):
        pieces.append((template[pos:], None))
    return pieces


def _long(rng: random.Random, genre: str) -> list[Piece]:
    """Clauses chained with commas until the sentence passes LONG_MIN characters."""
    target = LONG_MIN + 1 + _below(rng, 80)
    pieces: list[Piece] = []
    length = 0
    while length < target:
        if pieces:
            pieces.append(("，" + _pick(rng, _CONNECTORS[genre]) + "，", None))
        clause = _fill(rng, _pick(rng, _TEMPLATES[genre]))
        text, etype = clause[-1]
        if etype is None:  # drop the clause's own end punctuation
            clause[-1] = (text.rstrip("。？！～"), None)
        pieces.extend(p for p in clause if p[0])
        length = sum(len(t) for t, _ in pieces)
    pieces.append((_END[genre], None))
    return pieces


def _to_sentence(sid: str, genre: str, pieces: list[Piece]) -> Sentence:
    chars: list[str] = []
    tags: list[str] = []
    for text, etype in pieces:
        for i, ch in enumerate(text):
            chars.append(ch)
            tags.append("O" if etype is None else ("B-" if i == 0 else "I-") + etype)
    return Sentence(sid, genre, tuple(chars), tuple(tags))


def generate_demo(sentences: int = 1200, seed: int = 0) -> list[Sentence]:
    """`sentences` synthetic sentences, genres cycling ft, sm, wa; ids like `demo-ft-00042`."""
    if sentences < MIN_SENTENCES:
        raise UserError(f"the demo corpus needs at least {MIN_SENTENCES} sentences, got {sentences}")
    rng = random.Random(seed)
    counters = {g: 0 for g in GENRES}
    out: list[Sentence] = []
    for k in range(sentences):
        genre = GENRES[k % len(GENRES)]
        roll = rng.random()
        if roll < EMPTY_RATE:
            pieces = [(_pick(rng, _EMPTY[genre]), None)]
        elif roll < EMPTY_RATE + LONG_RATE:
            pieces = _long(rng, genre)
        else:
            pieces = _fill(rng, _pick(rng, _TEMPLATES[genre]))
        out.append(_to_sentence(f"demo-{genre}-{counters[genre]:05d}", genre, pieces))
        counters[genre] += 1
    return out


def split_demo(corpus: list[Sentence]) -> dict[str, list[Sentence]]:
    """Cut the generated list 70/15/15 in order into train, dev, test (every part holds all genres)."""
    n = len(corpus)
    dev = n * SPLITS[1][1] // 100
    test = n * SPLITS[2][1] // 100
    train = n - dev - test
    return {"train": corpus[:train], "dev": corpus[train : train + dev], "test": corpus[train + dev :]}


def make_demo_corpus(out_dir: Path, sentences: int = 1200, seed: int = 0) -> dict[str, Path]:
    """Write the demo corpus under out_dir: {split}.jsonl, {split}_{genre}.txt and README.md.

    Returns file name -> path, e.g. "train.jsonl", "dev_ft.txt", "README.md".
    The same (sentences, seed) gives byte-identical files.
    """
    out_dir = Path(out_dir)
    parts = split_demo(generate_demo(sentences, seed))
    try:
        return _write_demo(out_dir, parts, sentences, seed)
    except OSError as e:  # an existing file, /proc/x, a read-only or full disk: one message naming the path
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"{out_dir}: exists and is not a folder; give a new or existing folder for the demo corpus") from None
        where = e.filename if e.filename else out_dir
        raise UserError(f"{where}: cannot write the demo corpus there ({e.strerror or e})") from None


def _write_demo(out_dir: Path, parts: dict[str, list[Sentence]], sentences: int, seed: int) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for split, sents in parts.items():
        path = out_dir / f"{split}.jsonl"
        write_jsonl(sents, path)
        written[path.name] = path
    for split, sents in parts.items():
        for genre in GENRES:
            path = out_dir / f"{split}_{genre}.txt"
            write_conll([s for s in sents if s.genre == genre], path)
            written[path.name] = path
    readme = out_dir / "README.md"
    readme.write_bytes(_readme(parts, sentences, seed).encode("utf-8"))
    written[readme.name] = readme
    return written


def _readme(parts: dict[str, list[Sentence]], sentences: int, seed: int) -> str:
    rows = []
    for split, sents in parts.items():
        counts = [sum(s.genre == g for s in sents) for g in GENRES]
        entities = sum(t.startswith("B-") for s in sents for t in s.tags)
        rows.append(f"| {split} | {len(sents)} | {' | '.join(map(str, counts))} | {entities} |")
    return "\n".join(
        [
            "# ablate demo corpus (synthetic)",
            "",
            "Synthetic Traditional-Chinese healthcare NER sentences made by `ablate.data.demo.make_demo_corpus`",
            f"(sentences={sentences}, seed={seed}); the same arguments give byte-identical files. Not real data:",
            "use it to try ablate offline, never to report results.",
            "",
            "Ten entity types (" + " ".join(ENTITY_TYPES) + "), character-level BIO tags, three genres:",
            "ft (news-style formal prose), sm (social-media questions), wa (encyclopaedia definitions).",
            "",
            "- `train.jsonl`, `dev.jsonl`, `test.jsonl`: ROCLING-style jsonl, genres interleaved.",
            "- `{split}_{genre}.txt`: the same sentences as CoNLL (`char TAG` per line, blank line between sentences).",
            "",
            "| split | sentences | ft | sm | wa | entities |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
