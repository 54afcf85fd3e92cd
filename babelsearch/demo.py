"""The bundled demo: real photos that scikit-image (and scikit-learn, if present) ship in their wheels."""

from __future__ import annotations

from pathlib import Path

# skimage.data function -> file name; all of these load without a network.
SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png",
    "chelsea": "cat-chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.png",
    "hubble_deep_field": "hubble-deep-field.png",
    "camera": "cameraman.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "page": "page.png",
    "retina": "retina.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "clock": "clock.png",
    "immunohistochemistry": "immunohistochemistry.png",
    "colorwheel": "colorwheel.png",
    "text": "text.png",
    "horse": "horse.png",
}

# names in many languages, then descriptions (babel-lite 3 reads sentences too)
DEMO_QUERIES = [
    "Katze",
    "猫",
    "café",
    "ракета",
    "寺院",
    "fleur",
    "قطة",
    "कॉफ़ी",
    "cohete",
    "Pferd",
    "eine Tasse Kaffee auf einem Tisch",
    "a man standing with a camera on a tripod",
    "un templo chino junto a los árboles",
]


def assemble_demo_photos(target: str | Path) -> list[Path]:
    """Write the demo photos into ``target`` (skipping ones already there); return their paths."""
    import numpy as np
    from PIL import Image

    try:
        import skimage.data
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise RuntimeError("the demo needs scikit-image: pip install 'babelsearch[demo]'") from exc

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for function, filename in SKIMAGE_PHOTOS.items():
        path = target / filename
        if not path.exists():
            pixels = getattr(skimage.data, function)()
            if pixels.dtype == bool:
                pixels = np.where(pixels, 0, 255).astype(np.uint8)  # silhouettes: black on white
            Image.fromarray(pixels).save(path)
        written.append(path)
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for name, pixels in zip(bunch.filenames, bunch.images):
            path = target / Path(name).name
            if not path.exists():
                Image.fromarray(pixels).save(path)
            written.append(path)
    except ImportError:
        pass
    return written
