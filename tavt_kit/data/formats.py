"""Readers for the annotation formats of the datasets users bring.

Each reader takes the dataset's root folder and returns a :class:`RawDataset`:
the training and test samples as ``(image path, 0-based label)`` in the order
the annotation files list them, and the class names. Nothing is decoded here;
a missing file or a wrong layout raises :class:`DatasetError` naming the file
and the expected layout.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import DatasetError

Sample = Tuple[str, int]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class RawDataset:
    """Samples of a dataset's official splits, before any held-out split or transform."""

    train: List[Sample]
    test: List[Sample]
    class_names: List[str]
    meta: Dict[str, Any] = field(default_factory=dict)
    #: a held-out split of the dataset's own (disjoint sources); None = carve one from ``train``
    holdout: Optional[List[Sample]] = None
    #: at most this many images of a split (``{"train": N, "holdout": N, "test": N}``; a split not named: all): a
    #: stratified subset seeded by the split seed, taken after the held-out split is carved from ``train``
    limits: Optional[Dict[str, int]] = None

    def __post_init__(self) -> None:
        n = len(self.class_names)
        if n < 2:  # a one-class "classifier" trains to 100 % and means nothing
            raise DatasetError(f"the dataset has {n} class{'es' if n != 1 else ''} "
                               f"({', '.join(map(str, self.class_names)) or 'none'}); a classifier needs at "
                               "least two")
        for split, samples in (("train", self.train), ("test", self.test), ("holdout", self.holdout or [])):
            bad = next((lab for _, lab in samples if not 0 <= int(lab) < n), None)
            if bad is not None:
                raise DatasetError(f"{split} split: label {bad} is outside the {n} classes of the dataset")
        trained = {int(lab) for _, lab in self.train}
        missing = next((i for i in range(n) if i not in trained), None)
        if missing is not None:  # a class the model can never learn, yet scored in every accuracy
            raise DatasetError(f"class {missing + 1} ({self.class_names[missing]}) has no training images; "
                               "expected at least one training image per class")


def _line_of(path: str, key: str) -> int:
    """The 1-based line of ``path`` whose first field is ``key`` (0 when not found)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if line.split()[:1] == [key]:
                return i
    return 0


# ---------------------------------------------------------------------- helpers
def _where(path: str, root: str) -> str:
    """``path`` as the user will recognise it: relative to the folder above the root."""
    base = os.path.dirname(os.path.abspath(root).rstrip(os.sep))
    rel = os.path.relpath(os.path.abspath(path), base)
    return path if rel.startswith("..") else rel


def _require_dir(root: str, layout: str) -> str:
    if root is None or root == "":
        raise DatasetError(f"root={root!r}: this dataset needs its root folder; expected {layout}")
    root = os.fspath(root)
    if not os.path.exists(root):
        raise DatasetError(f"{root}: not found; expected the dataset's root folder ({layout})")
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: not a folder; expected the dataset's root folder ({layout})")
    return root


def _find_root(root: str, marker: str, subdirs: Sequence[str]) -> str:
    """The folder holding ``marker``: ``root`` itself or one of the usual extraction subfolders."""
    if os.path.exists(os.path.join(root, marker)):
        return root
    for sub in subdirs:
        cand = os.path.join(root, sub)
        if os.path.exists(os.path.join(cand, marker)):
            return cand
    return root


def _read_lines(path: str, root: str, layout: str) -> List[List[str]]:
    if not os.path.isfile(path):
        raise DatasetError(f"{_where(path, root)}: missing; expected {layout}")
    with open(path, encoding="utf-8-sig", newline=None) as f:  # a BOM and CRLF line ends are read as text
        return [line.split() for line in f if line.strip()]


def _id_table(path: str, root: str, layout: str, columns: int = 2, rest_joined: bool = False) -> Dict[str, Any]:
    """``id value`` lines -> dict (``rest_joined``: the value is the rest of the line, spaces kept).

    A UTF-8 byte-order mark and CRLF line ends are read as plain text; an id listed twice is refused (naming
    both lines) instead of one line silently replacing the other."""
    out: Dict[str, Any] = {}
    first: Dict[str, int] = {}
    if not os.path.isfile(path):
        raise DatasetError(f"{_where(path, root)}: missing; expected {layout}")
    with open(path, encoding="utf-8-sig", newline=None) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            key = line.split(None, 1)[0]
            if key in first:
                raise DatasetError(f"{_where(path, root)}:{lineno}: id {key} is listed twice (lines {first[key]} "
                                   f"and {lineno}); expected each id once")
            first[key] = lineno
            if rest_joined:
                parts = line.split(None, 1)
                if len(parts) != 2:
                    raise DatasetError(f"{_where(path, root)}:{lineno}: expected 'ID VALUE', got {line[:80]!r}")
                out[parts[0]] = parts[1]
            else:
                parts = line.split()
                if len(parts) != columns:
                    raise DatasetError(f"{_where(path, root)}:{lineno}: expected {columns} columns, "
                                       f"got {line[:80]!r}")
                out[parts[0]] = parts[1] if columns == 2 else parts[1:]
    return out


def _int(value: str, path: str, root: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{_where(path, root)}: {what} must be an integer, got {value!r}") from None


def _check_first_image(samples: Sequence[Sample], root: str, layout: str) -> None:
    """Catch a wrong root early: the first listed image of each split must exist."""
    if samples and not os.path.isfile(samples[0][0]):
        raise DatasetError(f"{_where(samples[0][0], root)}: image listed in the annotations is missing; "
                           f"expected {layout}")


def _strip_number(name: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black_footed_Albatross``."""
    return re.sub(r"^\d+\.", "", name)


# ------------------------------------------------------------------------- CUB
CUB_LAYOUT = ("the CUB-200-2011 layout (images.txt, image_class_labels.txt, train_test_split.txt, "
              "classes.txt, images/)")


def _cub_like(root: str, layout: str, nabirds: bool) -> RawDataset:
    images = _id_table(os.path.join(root, "images.txt"), root, layout, rest_joined=True)
    labels = _id_table(os.path.join(root, "image_class_labels.txt"), root, layout)
    split = _id_table(os.path.join(root, "train_test_split.txt"), root, layout)
    classes_file = os.path.join(root, "classes.txt")
    classes = _id_table(classes_file, root, layout, rest_joined=True) if (
        nabirds or os.path.isfile(classes_file)) else None
    img_dir = os.path.join(root, "images")
    if not os.path.isdir(img_dir):
        raise DatasetError(f"{_where(img_dir, root)}: missing; expected {layout}")
    used = set()
    rows = []
    paths: Dict[str, str] = {}
    for image_id, rel in images.items():
        if rel in paths:  # one image under two ids: it could be both a training and a test image
            images_file = os.path.join(root, "images.txt")
            raise DatasetError(f"{_where(images_file, root)}:{_line_of(images_file, image_id)}: image {rel} is "
                               f"listed twice (ids {paths[rel]} and {image_id}); expected each image once")
        paths[rel] = image_id
        if image_id not in labels:
            raise DatasetError(f"{_where(os.path.join(root, 'image_class_labels.txt'), root)}: no label for "
                               f"image {image_id} ({rel}); expected one line per image of images.txt")
        if image_id not in split:
            raise DatasetError(f"{_where(os.path.join(root, 'train_test_split.txt'), root)}: no split for "
                               f"image {image_id} ({rel}); expected one line per image of images.txt")
        cid = _int(labels[image_id], os.path.join(root, "image_class_labels.txt"), root, "a class id")
        if classes is not None and not nabirds and not 1 <= cid <= len(classes):
            labels_file = os.path.join(root, "image_class_labels.txt")
            raise DatasetError(f"{_where(labels_file, root)}: line {_line_of(labels_file, image_id)}: image "
                               f"{image_id} has class {cid}; expected 1..{len(classes)} (the classes of "
                               f"{_where(classes_file, root)})")
        is_train = split[image_id]
        if is_train not in ("0", "1"):
            raise DatasetError(f"{_where(os.path.join(root, 'train_test_split.txt'), root)}: image {image_id}: "
                               f"expected 1 (train) or 0 (test), got {is_train!r}")
        used.add(cid)
        rows.append((os.path.join(img_dir, rel), cid, is_train == "1"))
    if not rows:
        raise DatasetError(f"{_where(os.path.join(root, 'images.txt'), root)}: lists no images; expected {layout}")
    meta: Dict[str, Any] = {}
    if nabirds:
        # NABirds labels are ids into a 1011-node taxonomy; the images use its 555 leaves.
        ids = sorted(used)
        for cid in ids:
            if str(cid) not in classes:
                raise DatasetError(f"{_where(classes_file, root)}: class {cid} used by image_class_labels.txt "
                                   "is not listed; expected 'ID NAME' lines for every class")
        index = {cid: i for i, cid in enumerate(ids)}
        class_names = [classes[str(cid)] for cid in ids]
        meta["class_ids"] = ids
        hier = os.path.join(root, "hierarchy.txt")
        if os.path.isfile(hier):
            parents = {_int(c, hier, root, "a class id"): _int(p, hier, root, "a class id")
                       for c, p in _id_table(hier, root, layout).items()}
            meta["parents"] = {classes.get(str(c), str(c)): classes.get(str(p), str(p))
                               for c, p in parents.items() if c in index}
    else:
        # CUB: class ids are 1-based and contiguous
        n = max(used)
        if min(used) < 1:
            raise DatasetError(f"{_where(os.path.join(root, 'image_class_labels.txt'), root)}: class ids are "
                               f"1-based, found {min(used)}")
        if classes is not None:
            n = max(n, len(classes))
            class_names = [_strip_number(classes.get(str(i), str(i))) for i in range(1, n + 1)]
            _check_classes_used(rows, class_names, classes_file, root)
        else:
            # no classes.txt: the folder names under images/ (001.Black_footed_Albatross/...)
            names = {}
            for path, cid, _ in rows:
                names.setdefault(cid, _strip_number(os.path.basename(os.path.dirname(path))))
            class_names = [names.get(i, str(i)) for i in range(1, n + 1)]
        index = {i: i - 1 for i in range(1, n + 1)}
    train = [(p, index[c]) for p, c, t in rows if t]
    test = [(p, index[c]) for p, c, t in rows if not t]
    if classes is None or nabirds:
        _check_classes_used([(p, index[c] + 1, t) for p, c, t in rows], class_names,
                            os.path.join(root, "image_class_labels.txt"), root)
    _check_first_image(train, root, layout)
    return RawDataset(train, test, class_names, meta)


def _check_classes_used(rows, class_names: Sequence[str], listed_in: str, root: str) -> None:
    """Every class (1-based ``rows`` of ``(path, class, is_train)``) has images, and training images: a class
    without them would be trained on nothing and still counted in every accuracy."""
    total: Dict[int, int] = {}
    train: Dict[int, int] = {}
    for _, cid, is_train in rows:
        total[cid] = total.get(cid, 0) + 1
        train[cid] = train.get(cid, 0) + bool(is_train)
    for cid, name in enumerate(class_names, 1):
        if not total.get(cid):
            raise DatasetError(f"{_where(listed_in, root)}: class {cid} ({name}) has no images (no line of "
                               "image_class_labels.txt gives it); expected at least one training image per class")
        if not train.get(cid):
            raise DatasetError(f"{_where(listed_in, root)}: class {cid} ({name}) has no training images (its "
                               f"{total[cid]} image{'s' if total[cid] != 1 else ''} are all test images in "
                               "train_test_split.txt); expected at least one training image per class")


def load_cub(root: str) -> RawDataset:
    """CUB-200-2011: ``images.txt``, ``image_class_labels.txt`` (1-based), ``train_test_split.txt`` (1 = train)."""
    root = _find_root(_require_dir(root, CUB_LAYOUT), "images.txt", ["CUB_200_2011"])
    return _cub_like(root, CUB_LAYOUT, nabirds=False)


NABIRDS_LAYOUT = ("the NABirds layout (images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
                  "hierarchy.txt, images/)")


def load_nabirds(root: str) -> RawDataset:
    """NABirds: CUB's files plus ``classes.txt`` (taxonomy names) and ``hierarchy.txt``.

    The 555 leaf classes that images use become labels 0..554 in class-id order;
    ``meta["parents"]`` maps each class name to its parent in the taxonomy.
    """
    root = _find_root(_require_dir(root, NABIRDS_LAYOUT), "images.txt", ["nabirds"])
    return _cub_like(root, NABIRDS_LAYOUT, nabirds=True)


# ------------------------------------------------------------------- .mat files
def _loadmat(path: str, root: str, layout: str, **kw) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise DatasetError(f"{_where(path, root)}: missing; expected {layout}")
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        raise DatasetError(f"{path}: reading .mat annotations needs scipy (pip install scipy)") from None
    try:
        return scipy.io.loadmat(path, **kw)
    except (ValueError, OSError, TypeError, NotImplementedError) as e:
        raise DatasetError(f"{_where(path, root)}: not a readable MATLAB file ({e}); expected {layout}") from None


def _mat_str(x) -> str:
    import numpy as np

    while isinstance(x, np.ndarray):  # cells and char arrays come nested: array([array(['a.jpg'])])
        if x.size == 0:
            return ""
        x = x.reshape(-1)[0]
    return str(x)


def _mat_field(entry, name: str, path: str, root: str, layout: str):
    try:
        return entry[name]
    except (ValueError, KeyError, IndexError):
        raise DatasetError(f"{_where(path, root)}: annotation has no field {name!r}; expected {layout}") from None


# ----------------------------------------------------------------------- Dogs
DOGS_LAYOUT = "the Stanford Dogs layout (train_list.mat, test_list.mat with file_list and labels, Images/)"


def load_dogs(root: str) -> RawDataset:
    """Stanford Dogs: ``train_list.mat``/``test_list.mat`` (``file_list``, 1-based ``labels``), ``Images/``."""
    import numpy as np

    root = _find_root(_require_dir(root, DOGS_LAYOUT), "train_list.mat", ["StanfordDogs", "stanford_dogs"])
    img_dir = os.path.join(root, "Images")
    if not os.path.isdir(img_dir):
        raise DatasetError(f"{_where(img_dir, root)}: missing; expected {DOGS_LAYOUT}")
    splits, names = {}, {}
    for split in ("train", "test"):
        path = os.path.join(root, f"{split}_list.mat")
        mat = _loadmat(path, root, DOGS_LAYOUT)
        for key in ("file_list", "labels"):
            if key not in mat:
                raise DatasetError(f"{_where(path, root)}: no {key!r} array; expected {DOGS_LAYOUT}")
        files = [_mat_str(f) for f in np.asarray(mat["file_list"]).reshape(-1)]
        labels = [int(v) for v in np.asarray(mat["labels"]).reshape(-1)]
        if len(files) != len(labels):
            raise DatasetError(f"{_where(path, root)}: {len(files)} files but {len(labels)} labels")
        if labels and min(labels) < 1:
            raise DatasetError(f"{_where(path, root)}: labels are 1-based, found {min(labels)}")
        samples = []
        for f, lab in zip(files, labels):
            samples.append((os.path.join(img_dir, f), lab - 1))
            # n02085620-Chihuahua/n02085620_10074.jpg -> Chihuahua
            folder = f.replace("\\", "/").split("/")[0]
            names.setdefault(lab - 1, folder.split("-", 1)[1] if "-" in folder else folder)
        splits[split] = samples
    n = max(names) + 1 if names else 0
    class_names = [names.get(i, str(i + 1)) for i in range(n)]
    _check_first_image(splits["train"], root, DOGS_LAYOUT)
    return RawDataset(splits["train"], splits["test"], class_names)


# ----------------------------------------------------------------------- Cars
CARS_LAYOUT = ("the Stanford Cars devkit layout (devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
               "cars_test_annos_withlabels.mat, cars_train/, cars_test/)")


def _find_file(root: str, name: str) -> str:
    for sub in ("", "devkit", "car_devkit/devkit", "car_devkit"):
        p = os.path.join(root, sub, name)
        if os.path.isfile(p):
            return p
    return os.path.join(root, "devkit", name)


def _image_dir(root: str, name: str) -> str:
    d = os.path.join(root, name)
    nested = os.path.join(d, name)  # the Kaggle archive nests cars_train/cars_train/
    return nested if os.path.isdir(nested) else d


def load_cars(root: str) -> RawDataset:
    """Stanford Cars: the devkit's ``.mat`` annotations (``class`` 1-based, ``fname``), ``cars_train/``, ``cars_test/``.

    The test labels come from ``cars_test_annos_withlabels.mat`` (searched in the
    root and in ``devkit/``). Bounding boxes are not used (the seeds train on
    whole images).
    """
    import numpy as np

    root = _find_root(_require_dir(root, CARS_LAYOUT), "cars_train", ["stanford_cars", "StanfordCars"])
    meta = _loadmat(_find_file(root, "cars_meta.mat"), root, CARS_LAYOUT, squeeze_me=True)
    if "class_names" not in meta:
        raise DatasetError(f"{_where(_find_file(root, 'cars_meta.mat'), root)}: no 'class_names'; "
                           f"expected {CARS_LAYOUT}")
    class_names = [_mat_str(c) for c in np.atleast_1d(meta["class_names"])]
    out = {}
    for split, annos, folder in (("train", "cars_train_annos.mat", "cars_train"),
                                 ("test", "cars_test_annos_withlabels.mat", "cars_test")):
        path = _find_file(root, annos)
        mat = _loadmat(path, root, CARS_LAYOUT, squeeze_me=True)
        if "annotations" not in mat:
            raise DatasetError(f"{_where(path, root)}: no 'annotations' struct; expected {CARS_LAYOUT}")
        img_dir = _image_dir(root, folder)
        if not os.path.isdir(img_dir):
            raise DatasetError(f"{_where(img_dir, root)}: missing; expected {CARS_LAYOUT}")
        samples = []
        for a in np.atleast_1d(mat["annotations"]):
            cls = int(_mat_field(a, "class", path, root, CARS_LAYOUT))
            if not 1 <= cls <= len(class_names):
                raise DatasetError(f"{_where(path, root)}: class {cls} outside 1..{len(class_names)} "
                                   "(cars_meta.mat class_names)")
            fname = _mat_str(_mat_field(a, "fname", path, root, CARS_LAYOUT))
            samples.append((os.path.join(img_dir, os.path.basename(fname)), cls - 1))
        out[split] = samples
    _check_first_image(out["train"], root, CARS_LAYOUT)
    return RawDataset(out["train"], out["test"], class_names)


# ----------------------------------------------------------------- iNat 2017
INAT_LAYOUT = "the iNaturalist 2017 layout (train2017.json, val2017.json in COCO style, train_val_images/)"


def _coco(path: str, root: str, layout: str) -> Tuple[List[Tuple[str, int]], Dict[int, str]]:
    if not os.path.isfile(path):
        raise DatasetError(f"{_where(path, root)}: missing; expected {layout}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{_where(path, root)}: not valid JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{_where(path, root)}: no {key!r} list; expected {layout}")
    try:
        ids = [im["id"] for im in data["images"]]
        files = {im["id"]: im["file_name"] for im in data["images"]}
        cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        rows = [(files[a["image_id"]], int(a["category_id"])) for a in data["annotations"]]
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{_where(path, root)}: malformed COCO entry ({type(e).__name__}: {e}); "
                           f"expected {layout}") from None
    if len(files) != len(ids):  # a dict would keep one of them silently
        seen: set = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise DatasetError(f"{_where(path, root)}: image id {dup} is listed twice in 'images'; expected each id once")
    return rows, cats


def load_inat2017(root: str) -> RawDataset:
    """iNaturalist 2017: COCO-style ``train2017.json`` and ``val2017.json`` (the test split).

    Category ids become labels in id order; the class names are the category names.
    """
    root = _find_root(_require_dir(root, INAT_LAYOUT), "train2017.json", ["inat2017", "iNat2017"])
    train, cats = _coco(os.path.join(root, "train2017.json"), root, INAT_LAYOUT)
    test, cats_val = _coco(os.path.join(root, "val2017.json"), root, INAT_LAYOUT)
    for k, v in cats_val.items():
        cats.setdefault(k, v)
    ids = sorted(cats)
    index = {cid: i for i, cid in enumerate(ids)}
    for rows, name in ((train, "train2017.json"), (test, "val2017.json")):
        for _, cid in rows:
            if cid not in index:
                raise DatasetError(f"{_where(os.path.join(root, name), root)}: annotation of category {cid} "
                                   "which 'categories' does not list")
    out = [[(os.path.join(root, f), index[c]) for f, c in rows] for rows in (train, test)]
    _check_first_image(out[0], root, INAT_LAYOUT)
    return RawDataset(out[0], out[1], [cats[i] for i in ids], {"class_ids": ids})


# ----------------------------------------------------------------- ultra-FGVC
UFGVC_LAYOUT = "the ultra-FGVC layout (anno/train.txt, anno/test.txt with 'relpath label' lines, 1-based; images/)"


def load_ufgvc(root: str) -> RawDataset:
    """Cotton80, SoyLoc, SoyGene, SoyGlobal, SoyAgeing: ``anno/{train,test}.txt`` of ``relpath label`` (1-based).

    Paths are relative to ``images/`` (or to the root when they start with
    ``images/``). These sets have no class names; the names are the labels as
    the files write them (``"1"``, ``"2"``, ...).
    """
    root = _require_dir(root, UFGVC_LAYOUT)
    img_dir = os.path.join(root, "images")
    out = {}
    labels_seen = set()
    listed: Dict[str, Tuple[str, int]] = {}
    for split in ("train", "test"):
        path = os.path.join(root, "anno", f"{split}.txt")
        rows = []
        for lineno, parts in enumerate(_read_lines(path, root, UFGVC_LAYOUT), 1):
            if len(parts) < 2:
                raise DatasetError(f"{_where(path, root)}:{lineno}: expected 'RELPATH LABEL', got {' '.join(parts)!r}")
            rel, lab = " ".join(parts[:-1]), _int(parts[-1], path, root, f"line {lineno}: the label")
            if lab < 1:
                raise DatasetError(f"{_where(path, root)}:{lineno}: labels are 1-based, got {lab}")
            if rel in listed:
                was, at = listed[rel]
                raise DatasetError(f"{_where(path, root)}:{lineno}: image {rel} is listed twice (anno/{was}.txt line "
                                   f"{at} and anno/{split}.txt line {lineno}); expected each image once")
            listed[rel] = (split, lineno)
            labels_seen.add(lab)
            rows.append((rel, lab))
        out[split] = rows
    if not out["train"]:
        raise DatasetError(f"{_where(os.path.join(root, 'anno', 'train.txt'), root)}: lists no images")
    first = out["train"][0][0]
    base = img_dir
    if not os.path.isfile(os.path.join(img_dir, first)) and os.path.isfile(os.path.join(root, first)):
        base = root
    if base is img_dir and not os.path.isdir(img_dir):
        raise DatasetError(f"{_where(img_dir, root)}: missing; expected {UFGVC_LAYOUT}")
    n = max(labels_seen)
    trained = {lab for _, lab in out["train"]}
    gap = next((lab for lab in range(1, n + 1) if lab not in trained), None)
    if gap is not None:
        raise DatasetError(f"{_where(os.path.join(root, 'anno', 'train.txt'), root)}: class {gap} has no training "
                           f"images (labels run 1..{n}); expected at least one training image per class")
    samples = {s: [(os.path.join(base, rel), lab - 1) for rel, lab in rows] for s, rows in out.items()}
    _check_first_image(samples["train"], root, UFGVC_LAYOUT)
    return RawDataset(samples["train"], samples["test"], [str(i) for i in range(1, n + 1)])


# -------------------------------------------------------------------- folders
FOLDER_LAYOUT = "class folders (root/train/<class>/*, root/test/<class>/*, or root/<class>/*)"


def _scan_classes(d: str, root: str) -> Dict[str, List[str]]:
    """``{class: image paths}`` of the class folders in ``d``, recursively, in sorted order. Links to folders are
    followed, except a link back into a folder that holds it (a loop), into another class folder, or to a folder
    read already (its images would be read twice or get two labels): each is refused in one line naming it."""
    classes = [c for c in sorted(os.listdir(d)) if not c.startswith(".") and os.path.isdir(os.path.join(d, c))]
    owner = {os.path.realpath(os.path.join(d, c)): c for c in classes}
    seen: Dict[str, str] = {}
    out = {}
    for cls in classes:
        files: List[str] = []
        _walk_class(os.path.join(d, cls), cls, (), owner, seen, files, root)
        out[cls] = files
    return out


def _walk_class(path: str, cls: str, chain: Tuple[str, ...], owner: Dict[str, str], seen: Dict[str, str],
                files: List[str], root: str) -> None:
    """Append the images under ``path`` (files first, then each subfolder; ``chain``: the real paths above)."""
    real = os.path.realpath(path)
    if chain:  # the class folder itself was checked by the caller
        link = _where(path, root)
        if any(real == c or c.startswith(real + os.sep) for c in chain):
            raise DatasetError(f"{link}: links back to {real}, a folder that holds it (a loop: its images would be "
                               f"read again as class {cls}); expected class folders without links into themselves")
        other = next((c for r, c in owner.items() if c != cls and (real == r or real.startswith(r + os.sep))), None)
        if other is not None:
            raise DatasetError(f"{link}: links into class folder {other}, whose images would be labelled {cls} too; "
                               "expected each image under one class folder")
    if real in seen:
        raise DatasetError(f"{_where(path, root)}: the folder {real} is read already (as {seen[real]}); expected "
                           "each image under one class folder, once")
    seen[real] = _where(path, root)
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise DatasetError(f"{_where(path, root)}: cannot be read ({e.strerror or e}); expected a readable folder") from None
    subs = [n for n in names if os.path.isdir(os.path.join(path, n))]
    files += [os.path.join(path, n) for n in names if n not in subs and not n.startswith(".")
              and n.lower().endswith(IMAGE_EXTENSIONS)]
    for sub in subs:
        _walk_class(os.path.join(path, sub), cls, chain + (real,), owner, seen, files, root)


def load_folder(root: str, test_fraction: float = 0.2) -> RawDataset:
    """Plain class folders.

    ``root/train/<class>/*`` and ``root/test/<class>/*`` (``val/`` is accepted
    for ``test/``); or ``root/<class>/*``, whose test split is then a fixed
    stratified 20 % (seed 0). Classes are the sorted folder names of the
    training split; images are found recursively, in sorted order.
    """
    from .splits import stratified_split

    root = _require_dir(root, FOLDER_LAYOUT)
    train_dir = os.path.join(root, "train")
    test_dir = next((os.path.join(root, d) for d in ("test", "val") if os.path.isdir(os.path.join(root, d))), None)
    meta: Dict[str, Any] = {}
    if os.path.isdir(train_dir):
        train_c = _scan_classes(train_dir, root)
        test_c = _scan_classes(test_dir, root) if test_dir else {}
        if test_dir is None:
            raise DatasetError(f"{_where(os.path.join(root, 'test'), root)}: missing; expected {FOLDER_LAYOUT}")
        extra = sorted(set(test_c) - set(train_c))
        if extra:
            raise DatasetError(f"{_where(os.path.join(test_dir, extra[0]), root)}: class folder not in "
                               f"{_where(train_dir, root)}; the test classes must be training classes")
        where = train_dir
    else:
        train_c, test_c, where = _scan_classes(root, root), None, root
    if not train_c:
        raise DatasetError(f"{where}: no class folders; expected {FOLDER_LAYOUT}")
    empty = [c for c, f in train_c.items() if not f]
    if empty:
        raise DatasetError(f"{_where(os.path.join(where, empty[0]), root)}: class folder holds no images "
                           f"({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    if len(train_c) < 2:
        raise DatasetError(f"{where}: one class folder ({next(iter(train_c))}); a classifier needs at least two "
                           f"class folders; expected {FOLDER_LAYOUT}")
    class_names = list(train_c)
    index = {c: i for i, c in enumerate(class_names)}
    train = [(f, index[c]) for c, files in train_c.items() for f in files]
    if test_c is not None:
        test = [(f, index[c]) for c, files in test_c.items() for f in files]
    else:
        keep, held = stratified_split([lab for _, lab in train], test_fraction, seed=0)
        test = [train[i] for i in held]
        train = [train[i] for i in keep]
        meta["test_split"] = f"fixed stratified {test_fraction:.0%} of the class folders (seed 0)"
    return RawDataset(train, test, class_names, meta)
