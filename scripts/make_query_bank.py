"""Generate engine/resources/query_bank.txt, the default query bank for margin reranking.

The bank stands for "typical queries": margin reranking measures, for every image, how close it is
to such queries in general (its hubness), so a photo that is near everything stops topping every
result list. Sources, all written here or shipped with the package:

* the first WordNet lemma of each of the 1000 ImageNet classes (engine/resources/imagenet_classes.tsv),
* 40 everyday concepts in 15 languages, bare and in that language's "photo of" shape (written by
  hand for this file),
* DESCRIPTIONS sentences in the shape people describe photos ("two children playing in the snow",
  "a plate of pasta on a wooden table"), drawn with a fixed seed from a small grammar written by hand
  for this file (babel-lite 3 reads a sentence by its caption part, and these stand for such queries).

With the wide neighbourhoods margin reranking uses (k = 256 up to the whole bank), the bank's make-up
hardly matters: on the shared sample, all lemmas, all lemmas in eight English prompt shapes, or the
concepts alone all scored within half a point of recall@10 of this bank. This one is small (fast to embed when
an index is first built) and not tied to ImageNet alone.

No evaluation data (Babel-ImageNet, XTD, Crossmodal-3600) is used. Run from the repository root:

    python scripts/make_query_bank.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ROOT / "engine" / "resources" / "imagenet_classes.tsv"
OUT = ROOT / "engine" / "resources" / "query_bank.txt"

# language -> (prompt shape, 40 concepts in the order of CONCEPTS_EN)
CONCEPTS_EN = [
    "dog",
    "cat",
    "bird",
    "fish",
    "horse",
    "cow",
    "car",
    "bicycle",
    "airplane",
    "boat",
    "train",
    "bus",
    "house",
    "tree",
    "flower",
    "mountain",
    "beach",
    "sea",
    "river",
    "snow",
    "sky",
    "city",
    "street",
    "bridge",
    "food",
    "bread",
    "fruit",
    "apple",
    "cake",
    "coffee",
    "table",
    "chair",
    "book",
    "phone",
    "computer",
    "clock",
    "child",
    "woman",
    "man",
    "garden",
]

CONCEPTS = {
    "en": ("a photo of a {}", CONCEPTS_EN),
    "de": (
        "ein Foto von {}",
        "Hund|Katze|Vogel|Fisch|Pferd|Kuh|Auto|Fahrrad|Flugzeug|Boot|Zug|Bus|Haus|Baum|Blume|Berg|Strand|Meer|Fluss|Schnee|Himmel|Stadt|Straße|Brücke|Essen|Brot|Obst|Apfel|Kuchen|Kaffee|Tisch|Stuhl|Buch|Telefon|Computer|Uhr|Kind|Frau|Mann|Garten",
    ),
    "fr": (
        "une photo de {}",
        "chien|chat|oiseau|poisson|cheval|vache|voiture|vélo|avion|bateau|train|bus|maison|arbre|fleur|montagne|plage|mer|rivière|neige|ciel|ville|rue|pont|nourriture|pain|fruit|pomme|gâteau|café|table|chaise|livre|téléphone|ordinateur|horloge|enfant|femme|homme|jardin",
    ),
    "es": (
        "una foto de {}",
        "perro|gato|pájaro|pez|caballo|vaca|coche|bicicleta|avión|barco|tren|autobús|casa|árbol|flor|montaña|playa|mar|río|nieve|cielo|ciudad|calle|puente|comida|pan|fruta|manzana|pastel|café|mesa|silla|libro|teléfono|ordenador|reloj|niño|mujer|hombre|jardín",
    ),
    "it": (
        "una foto di {}",
        "cane|gatto|uccello|pesce|cavallo|mucca|automobile|bicicletta|aereo|barca|treno|autobus|casa|albero|fiore|montagna|spiaggia|mare|fiume|neve|cielo|città|strada|ponte|cibo|pane|frutta|mela|torta|caffè|tavolo|sedia|libro|telefono|computer|orologio|bambino|donna|uomo|giardino",
    ),
    "pt": (
        "uma foto de {}",
        "cachorro|gato|pássaro|peixe|cavalo|vaca|carro|bicicleta|avião|barco|trem|ônibus|casa|árvore|flor|montanha|praia|mar|rio|neve|céu|cidade|rua|ponte|comida|pão|fruta|maçã|bolo|café|mesa|cadeira|livro|telefone|computador|relógio|criança|mulher|homem|jardim",
    ),
    "nl": (
        "een foto van {}",
        "hond|kat|vogel|vis|paard|koe|auto|fiets|vliegtuig|boot|trein|bus|huis|boom|bloem|berg|strand|zee|rivier|sneeuw|lucht|stad|straat|brug|eten|brood|fruit|appel|taart|koffie|tafel|stoel|boek|telefoon|computer|klok|kind|vrouw|man|tuin",
    ),
    "pl": (
        "zdjęcie: {}",
        "pies|kot|ptak|ryba|koń|krowa|samochód|rower|samolot|łódź|pociąg|autobus|dom|drzewo|kwiat|góra|plaża|morze|rzeka|śnieg|niebo|miasto|ulica|most|jedzenie|chleb|owoce|jabłko|ciasto|kawa|stół|krzesło|książka|telefon|komputer|zegar|dziecko|kobieta|mężczyzna|ogród",
    ),
    "ru": (
        "фотография: {}",
        "собака|кошка|птица|рыба|лошадь|корова|машина|велосипед|самолёт|лодка|поезд|автобус|дом|дерево|цветок|гора|пляж|море|река|снег|небо|город|улица|мост|еда|хлеб|фрукты|яблоко|торт|кофе|стол|стул|книга|телефон|компьютер|часы|ребёнок|женщина|мужчина|сад",
    ),
    "tr": (
        "{} fotoğrafı",
        "köpek|kedi|kuş|balık|at|inek|araba|bisiklet|uçak|tekne|tren|otobüs|ev|ağaç|çiçek|dağ|plaj|deniz|nehir|kar|gökyüzü|şehir|sokak|köprü|yemek|ekmek|meyve|elma|pasta|kahve|masa|sandalye|kitap|telefon|bilgisayar|saat|çocuk|kadın|adam|bahçe",
    ),
    "ar": (
        "صورة {}",
        "كلب|قطة|طائر|سمكة|حصان|بقرة|سيارة|دراجة|طائرة|قارب|قطار|حافلة|بيت|شجرة|زهرة|جبل|شاطئ|بحر|نهر|ثلج|سماء|مدينة|شارع|جسر|طعام|خبز|فاكهة|تفاحة|كعكة|قهوة|طاولة|كرسي|كتاب|هاتف|حاسوب|ساعة|طفل|امرأة|رجل|حديقة",
    ),
    "hi": (
        "{} की तस्वीर",
        "कुत्ता|बिल्ली|पक्षी|मछली|घोड़ा|गाय|कार|साइकिल|हवाई जहाज़|नाव|रेलगाड़ी|बस|घर|पेड़|फूल|पहाड़|समुद्र तट|समुद्र|नदी|बर्फ़|आसमान|शहर|सड़क|पुल|खाना|रोटी|फल|सेब|केक|कॉफ़ी|मेज़|कुर्सी|किताब|फ़ोन|कंप्यूटर|घड़ी|बच्चा|औरत|आदमी|बगीचा",
    ),
    "ja": (
        "{}の写真",
        "犬|猫|鳥|魚|馬|牛|車|自転車|飛行機|ボート|電車|バス|家|木|花|山|浜辺|海|川|雪|空|街|通り|橋|食べ物|パン|果物|りんご|ケーキ|コーヒー|テーブル|椅子|本|電話|コンピューター|時計|子供|女性|男性|庭",
    ),
    "zh": (
        "{}的照片",
        "狗|猫|鸟|鱼|马|牛|汽车|自行车|飞机|船|火车|公共汽车|房子|树|花|山|海滩|海|河|雪|天空|城市|街道|桥|食物|面包|水果|苹果|蛋糕|咖啡|桌子|椅子|书|电话|电脑|时钟|孩子|女人|男人|花园",
    ),
    "ko": (
        "{} 사진",
        "개|고양이|새|물고기|말|소|자동차|자전거|비행기|보트|기차|버스|집|나무|꽃|산|해변|바다|강|눈|하늘|도시|거리|다리|음식|빵|과일|사과|케이크|커피|탁자|의자|책|전화|컴퓨터|시계|아이|여자|남자|정원",
    ),
}


# The description grammar: who or what, doing what, where; and scenes, objects and images as the web
# describes them. Written here; no caption of any data set is in it.
WHO = [
    "a man",
    "a woman",
    "a young boy",
    "a little girl",
    "two children",
    "a group of people",
    "an old man",
    "an old woman",
    "a couple",
    "a crowd of people",
    "a baby",
    "a teenager",
    "two men",
    "two women",
    "a family",
    "a man in a red shirt",
    "a woman in a blue dress",
    "a boy in a yellow jacket",
    "a girl with long hair",
    "a man with a beard",
    "a football player",
    "a cyclist",
    "a surfer",
    "a skier",
    "a climber",
    "a runner",
    "a musician",
    "a dancer",
    "a dog",
    "a black dog",
    "a brown dog",
    "a white dog",
    "two dogs",
    "a small dog",
    "a cat",
    "a horse",
    "a bird",
    "a cow",
    "a child",
]
DOING = [
    "walking",
    "running",
    "sitting",
    "standing",
    "playing",
    "jumping",
    "smiling",
    "laughing",
    "riding a bicycle",
    "swimming",
    "climbing a rock",
    "eating",
    "reading a book",
    "holding an umbrella",
    "looking at the camera",
    "playing with a ball",
    "dancing",
    "waiting",
    "carrying a bag",
    "talking on the phone",
    "taking a picture",
    "lying down",
    "pushing a stroller",
    "riding a horse",
    "throwing a frisbee",
    "playing the guitar",
    "skating",
    "catching a ball",
    "resting",
    "drinking coffee",
]
WHERE = [
    "on the beach",
    "in the snow",
    "in a park",
    "on a city street",
    "in the water",
    "on the grass",
    "in front of a building",
    "on a mountain",
    "in a field",
    "at night",
    "in the rain",
    "near a lake",
    "on a stage",
    "in a kitchen",
    "on a sidewalk",
    "in the forest",
    "in a crowded market",
    "on a bridge",
    "at the airport",
    "by the sea",
    "in a garden",
    "on a dirt road",
    "in a classroom",
    "in a restaurant",
    "at a concert",
    "in the desert",
    "on a boat",
    "in a swimming pool",
]
SCENES = [
    "a plate of pasta on a wooden table",
    "a bowl of fresh fruit",
    "a cup of coffee and a croissant",
    "a modern living room with a grey sofa",
    "a bedroom with white walls",
    "an old church in a small town",
    "a city skyline at night",
    "an aerial view of a city",
    "a sunset over the ocean",
    "a snowy mountain landscape",
    "a waterfall in the forest",
    "a field of yellow flowers",
    "a busy street in the city centre",
    "a red car parked on the street",
    "a train at the station",
    "a sailing boat on a lake",
    "a bride and groom at their wedding",
    "a birthday cake with candles",
    "a crowd at a football match",
    "a singer performing on stage",
    "a portrait of a smiling woman",
    "a close-up of a cat's face",
    "an illustration of a cartoon character",
    "a vector icon of a house",
    "a drawing of a flower",
    "a black and white photo of an old street",
    "a painting of a landscape",
    "a map of the world",
    "a poster with large letters",
    "a screenshot of a web page",
    "a logo on a white background",
    "a pair of running shoes",
    "a leather handbag",
    "a wooden chair",
    "a kitchen with white cabinets",
    "a Christmas tree with lights",
    "fireworks over the city",
    "a library full of books",
    "a person working on a laptop",
    "a doctor in a hospital",
    "students in a lecture hall",
    "a farmer in a field",
    "a fisherman on a boat",
    "tourists in front of a monument",
]
DESCRIPTIONS = 1200


def descriptions(count: int = DESCRIPTIONS, seed: int = 0) -> list[str]:
    """The scenes, then ``count`` - len(SCENES) distinct who-doing-where sentences drawn with ``seed``."""
    import random

    draw = random.Random(seed)
    made = list(SCENES)
    seen = set(made)
    while len(made) < count:
        text = f"{draw.choice(WHO)} {draw.choice(DOING)} {draw.choice(WHERE)}"
        if text not in seen:
            seen.add(text)
            made.append(text)
    return made


def class_lemmas() -> list[list[str]]:
    rows = [line.split("\t") for line in CLASSES.read_text("utf-8").splitlines()[1:] if line.strip()]
    return [[name.strip() for name in row[1].split(",") if name.strip()] for row in rows]


def bank_texts() -> list[str]:
    texts = [names[0] for names in class_lemmas()]
    for language, (shape, words) in CONCEPTS.items():
        words = words if isinstance(words, list) else words.split("|")
        if len(words) != len(CONCEPTS_EN):
            raise SystemExit(f"{language}: {len(words)} concepts, expected {len(CONCEPTS_EN)}")
        for word in words:
            texts.extend([word, shape.format(word)])
    texts.extend(descriptions())
    return list(dict.fromkeys(texts))  # each text once, first occurrence kept


def main() -> None:
    texts = bank_texts()
    header = [
        "# babelsearch default query bank (generated by scripts/make_query_bank.py; do not edit)",
        f"# {len(texts)} texts: the ImageNet class names, 40 everyday concepts in {len(CONCEPTS)} languages "
        f"(bare and as a photo of them), {DESCRIPTIONS} descriptions of photos",
    ]
    OUT.write_text("\n".join(header + texts) + "\n", "utf-8")
    print(f"wrote {len(texts)} texts to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
