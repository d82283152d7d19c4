"""Domain knowledge: ophthalmic categories -> expert descriptions, prompt templates per modality, prompt ensembles.

The descriptions were written for this project from the clinical grading literature (sources per group below and in
docs/readme/vl.md); they describe what an image of the category shows, so a text encoder that never saw the class
name paired with an image can still place it near the findings it was trained on ("mild diabetic retinopathy" ->
"microaneurysms only"). ``KNOWLEDGE_VERSION`` is recorded in every run and must change whenever a description of an
existing category changes (additions are compatible). Users add or extend categories and templates from YAML::

    version: my-clinic-2
    categories:
      drusen:                       # a new category
        aliases: [drusenoid deposits]
        descriptions: [yellow deposits beneath the retinal pigment epithelium]
      glaucoma:                     # extends the built-in descriptions
        descriptions: [notching of the neuroretinal rim]
    templates:
      Fundus: ["A retinal photograph of {}."]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import read_yaml
from ..errors import ConfigError
from ..modalities import canonical_modality

__all__ = ["KNOWLEDGE_VERSION", "TEMPLATES", "Category", "Knowledge", "default_knowledge", "load_knowledge"]

KNOWLEDGE_VERSION = "1"

# Modality -> prompt templates; "{}" is replaced by the class name or one of its descriptions.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "Fundus": ("A fundus photograph of {}.",),
    "OCT": ("An OCT B-scan showing {}.",),
    "FFA": ("A fluorescein angiogram showing {}.",),
    "SlitLamp": ("A slit-lamp photograph of the anterior segment showing {}.",),
    "External": ("An external photograph of the eye showing {}.",),
    "Ultrasound": ("An ocular B-scan ultrasound showing {}.",),
    "UBM": ("An ultrasound biomicroscopy image showing {}.",),
    "MRI": ("An orbital MRI showing {}.",),
}
GENERIC_TEMPLATE = ("An eye image showing {}.",)

# (name, aliases, descriptions). Sources: DR grades - International Clinical Diabetic Retinopathy severity scale
# (Wilkinson et al., Ophthalmology 2003) and the ETDRS 4-2-1 rule (ETDRS report 12, 1991); DME - ETDRS report 1 (1985)
# and the international DME scale (Wilkinson 2003); glaucoma - AAO Preferred Practice Pattern Primary Open-Angle
# Glaucoma (2020); AMD - AREDS simplified scale (Ferris et al., 2005/2013) and AAO PPP AMD (2019); cataract - LOCS III
# (Chylack et al., 1993); myopia - META-PM classification (Ohno-Matsui et al., 2015); RVO - AAO PPP Retinal Vein
# Occlusions (2019); hypertensive retinopathy - Keith-Wagener-Barker and Wong & Mitchell (NEJM 2004); keratitis - AAO
# PPP Bacterial Keratitis (2018).
_CATEGORIES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "normal",
        ("healthy", "normal retina", "no abnormality"),
        (
            "a healthy eye with no visible disease",
            "no lesions, with a sharp optic disc and normal vessels",
        ),
    ),
    (
        "no diabetic retinopathy",
        ("no DR", "DR grade 0", "noDR"),
        (
            "a retina without microaneurysms, haemorrhages or exudates",
            "no signs of diabetic retinal damage",
        ),
    ),
    (
        "mild diabetic retinopathy",
        ("mild non-proliferative diabetic retinopathy", "DR grade 1", "mildDR"),
        (
            "microaneurysms only, seen as isolated tiny red dots",
            "a few microaneurysms and no other diabetic lesions",
        ),
    ),
    (
        "moderate diabetic retinopathy",
        ("moderate non-proliferative diabetic retinopathy", "DR grade 2", "modDR"),
        (
            "microaneurysms with dot and blot haemorrhages and some hard exudates",
            "more than microaneurysms but less than the severe 4-2-1 criteria, possibly cotton wool spots",
        ),
    ),
    (
        "severe diabetic retinopathy",
        ("severe non-proliferative diabetic retinopathy", "DR grade 3", "sevDR"),
        (
            "extensive intraretinal haemorrhages in each of the four quadrants",
            "venous beading in two or more quadrants or intraretinal microvascular abnormalities",
        ),
    ),
    (
        "proliferative diabetic retinopathy",
        ("PDR", "DR grade 4", "prolDR"),
        (
            "new abnormal vessels growing on the optic disc or elsewhere on the retina",
            "neovascularisation with vitreous or preretinal haemorrhage",
        ),
    ),
    (
        "non-proliferative diabetic retinopathy",
        ("NPDR",),
        (
            "microaneurysms, retinal haemorrhages and hard exudates without new vessels",
            "diabetic retinal lesions without neovascularisation",
        ),
    ),
    (
        "diabetic macular edema",
        ("DME", "diabetic macular oedema", "macular edema"),
        (
            "retinal thickening and hard exudates at or near the centre of the macula",
            "fluid-filled cystoid spaces and increased thickness of the central retina",
        ),
    ),
    (
        "no diabetic macular edema",
        ("no DME", "noDME"),
        (
            "a macula of normal thickness without fluid or exudates",
            "a normal foveal contour without intraretinal fluid",
        ),
    ),
    (
        "glaucoma",
        ("glaucomatous optic neuropathy",),
        (
            "an enlarged optic cup with a high cup-to-disc ratio and a thin neuroretinal rim",
            "optic disc cupping with rim notching and loss of the nerve fibre layer",
        ),
    ),
    (
        "age-related macular degeneration",
        ("AMD", "ARMD"),
        (
            "drusen, yellow deposits at the macula, with pigment changes",
            "macular atrophy or a neovascular lesion with haemorrhage in an older adult",
        ),
    ),
    (
        "cataract",
        ("lens opacity",),
        (
            "a cloudy lens that blurs and dims the view of the retina",
            "an opacified crystalline lens",
        ),
    ),
    (
        "mild cataract",
        ("early cataract", "immature cataract"),
        (
            "slight lens opacity; the optic disc and main vessels remain visible with some haze",
            "a partially clouded lens with part of the red reflex preserved",
        ),
    ),
    ("moderate cataract", (), ("lens opacity that blurs the disc margins and hides the small vessel branches",)),
    (
        "severe cataract",
        ("dense cataract", "mature cataract"),
        (
            "a dense white or brown lens opacity with hardly any fundus detail visible",
            "a completely opaque lens without red reflex",
        ),
    ),
    (
        "pathologic myopia",
        ("myopia", "high myopia", "myopic maculopathy"),
        (
            "a tessellated fundus with peripapillary atrophy and a tilted optic disc",
            "diffuse or patchy chorioretinal atrophy of the posterior pole in a highly myopic eye",
        ),
    ),
    (
        "retinal vein occlusion",
        ("RVO", "branch retinal vein occlusion", "central retinal vein occlusion"),
        (
            "flame-shaped haemorrhages along dilated, tortuous retinal veins",
            "haemorrhages and cotton wool spots in the territory drained by an occluded vein",
        ),
    ),
    (
        "hypertensive retinopathy",
        ("HR",),
        (
            "narrowed arterioles with arteriovenous nicking",
            "flame haemorrhages, cotton wool spots and, when severe, optic disc swelling",
        ),
    ),
    (
        "keratitis",
        ("corneal ulcer", "infectious keratitis"),
        (
            "a white corneal infiltrate with an epithelial defect and surrounding redness",
            "an inflamed, opaque cornea with stromal infiltration",
        ),
    ),
    ("normal cornea", ("clear cornea",), ("a clear, smooth and transparent cornea without infiltrate",)),
    (
        "other corneal abnormality",
        ("other cornea abnormalities",),
        ("a corneal scar, degeneration or deposit without active infection",),
    ),
)


def _fold(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


@dataclass(frozen=True)
class Category:
    """One category: its name, other spellings, and expert descriptions of what an image of it shows."""

    name: str
    aliases: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()


@dataclass
class Knowledge:
    """A versioned category dictionary with prompt templates.

    Attributes:
        version: recorded in runs (``KNOWLEDGE_VERSION``, or the YAML's ``version``).
        categories: canonical name -> :class:`Category`.
        templates: modality -> templates with one ``{}``.
    """

    version: str = KNOWLEDGE_VERSION
    categories: dict[str, Category] = field(default_factory=dict)
    templates: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def find(self, name: str) -> Category | None:
        """The category whose name or alias folds to ``name`` (case, dashes, underscores ignored), else None."""
        key = _fold(name)
        for cat in self.categories.values():
            if key in {_fold(n) for n in (cat.name, *cat.aliases)}:
                return cat
        return None

    def templates_for(self, modality: str | None) -> tuple[str, ...]:
        """Templates of ``modality`` (any spelling), or the generic one."""
        if modality:
            mod = canonical_modality(modality)
            if mod in self.templates:
                return self.templates[mod]
        return GENERIC_TEMPLATE

    def descriptions(self, name: str, domain_knowledge: bool = True) -> list[str]:
        """What fills a template for class ``name``: the name, plus its descriptions when ``domain_knowledge``."""
        cat = self.find(name) if domain_knowledge else None
        return [name] + (list(cat.descriptions) if cat else [])

    def prompts(self, name: str, modality: str | None = None, domain_knowledge: bool = True) -> list[str]:
        """Every prompt of the ensemble for class ``name`` (templates x descriptions)."""
        return [t.format(d) for t in self.templates_for(modality) for d in self.descriptions(name, domain_knowledge)]

    def extend(self, data: Mapping, where: str) -> Knowledge:
        """A copy extended by a parsed YAML mapping (see the module docstring)."""
        unknown = sorted(set(data) - {"version", "categories", "templates"})
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; valid: categories, templates, version")
        out = Knowledge(str(data.get("version", f"{self.version}+custom")), dict(self.categories), dict(self.templates))
        for name, spec in (data.get("categories") or {}).items():
            spec = spec or {}
            if not isinstance(spec, Mapping) or set(spec) - {"aliases", "descriptions"}:
                raise ConfigError(f"{where}: category {name!r} needs a mapping with 'descriptions' (and 'aliases')")
            descs, aliases = _strings(spec.get("descriptions"), where, name), _strings(spec.get("aliases"), where, name)
            old = out.find(str(name))
            if old is None:
                out.categories[str(name)] = Category(str(name), tuple(aliases), tuple(descs))
            else:
                out.categories[old.name] = replace(
                    old, aliases=old.aliases + tuple(aliases), descriptions=old.descriptions + tuple(descs)
                )
        for mod, temps in (data.get("templates") or {}).items():
            temps = _strings(temps, where, f"templates.{mod}")
            if any(t.count("{}") != 1 for t in temps):
                raise ConfigError(f"{where}: every template of {mod} needs exactly one '{{}}'")
            out.templates[canonical_modality(str(mod))] = tuple(temps)
        return out


def _strings(value: object, where: str, what: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in items):
        raise ConfigError(f"{where}: {what}: expected a list of non-empty strings, got {value!r}")
    return [v.strip() for v in items]


def default_knowledge() -> Knowledge:
    """The built-in dictionary (version ``KNOWLEDGE_VERSION``)."""
    cats = {n: Category(n, a, d) for n, a, d in _CATEGORIES}
    return Knowledge(KNOWLEDGE_VERSION, cats, dict(TEMPLATES))


def load_knowledge(path: str | Path | None = None) -> Knowledge:
    """The built-in dictionary, extended by the YAML file ``path`` when given."""
    base = default_knowledge()
    if path is None:
        return base
    data = read_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping with 'categories' and/or 'templates'")
    return base.extend(data, str(path))
