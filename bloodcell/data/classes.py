"""The eight canonical class names, in one order shared by every source (BloodMNIST's)."""
from __future__ import annotations

import re

from bloodcell.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature_granulocyte",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)

# Other spellings seen in public copies of the data (PBC folder names, MedMNIST labels, abbreviations).
_ALIASES = {
    "ig": "immature_granulocyte",
    "immaturegranulocyte": "immature_granulocyte",
    "immaturegranulocytes": "immature_granulocyte",
    "immaturegranulocytesmyelocytesmetamyelocytesandpromyelocytes": "immature_granulocyte",
    "granulocyte": "immature_granulocyte",
    "ba": "basophil",
    "eo": "eosinophil",
    "erb": "erythroblast",
    "ly": "lymphocyte",
    "mo": "monocyte",
    "ne": "neutrophil",
    "bne": "neutrophil",
    "sne": "neutrophil",
    "plt": "platelet",
    "thrombocyte": "platelet",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_LOOKUP = {_key(c): c for c in CLASS_NAMES} | {_key(c) + "s": c for c in CLASS_NAMES} | _ALIASES


def canonical_class(name: str) -> str | None:
    """Canonical name for a folder/label name (case, plural and known aliases tolerated), else None."""
    return _LOOKUP.get(_key(str(name)))


def map_class_names(names: list[str], where: str, allow_missing: bool = False) -> dict[str, int]:
    """Map source class names to canonical indices; unknown or (unless allowed) missing names are errors."""
    mapping: dict[str, int] = {}
    unknown = []
    for name in names:
        canon = canonical_class(name)
        if canon is None:
            unknown.append(name)
        else:
            mapping[name] = CLASS_NAMES.index(canon)
    if unknown:
        raise DataError(
            f"{where}: unknown class name(s) {unknown}. Expected the 8 classes {list(CLASS_NAMES)} "
            "(aliases such as 'ig' or plurals are accepted); rename or remove those folders/labels."
        )
    present = {CLASS_NAMES[i] for i in mapping.values()}
    missing = [c for c in CLASS_NAMES if c not in present]
    if missing and not allow_missing:
        raise DataError(
            f"{where}: missing class(es) {missing}; found {sorted(present)}. Training needs all 8 classes "
            "(set data.allow_missing_classes=true to evaluate on a subset)."
        )
    return mapping
