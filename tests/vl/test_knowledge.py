"""The versioned domain-knowledge dictionary, prompt templates per modality, and extension from YAML."""

import pytest

from visionfm.errors import ConfigError
from visionfm.vl.knowledge import KNOWLEDGE_VERSION, default_knowledge, load_knowledge

REQUIRED = [
    "no diabetic retinopathy",
    "mild diabetic retinopathy",
    "moderate diabetic retinopathy",
    "severe diabetic retinopathy",
    "proliferative diabetic retinopathy",
    "diabetic macular edema",
    "glaucoma",
    "age-related macular degeneration",
    "mild cataract",
    "severe cataract",
    "pathologic myopia",
    "retinal vein occlusion",
    "hypertensive retinopathy",
    "keratitis",
    "normal",
]


def test_dictionary_covers_the_categories_with_descriptions():
    kn = default_knowledge()
    assert kn.version == KNOWLEDGE_VERSION == "1"
    for name in REQUIRED:
        cat = kn.find(name)
        assert cat is not None and cat.descriptions, name
    assert kn.find("DR grade 2").name == "moderate diabetic retinopathy"
    assert kn.find("Other_cornea_abnormalities").name == "other corneal abnormality"
    assert kn.find("something unheard of") is None


def test_prompts_per_modality_and_ensembles():
    kn = default_knowledge()
    assert kn.prompts("glaucoma", "Fundus", domain_knowledge=False) == ["A fundus photograph of glaucoma."]
    oct_prompts = kn.prompts("diabetic macular edema", "oct", domain_knowledge=True)
    assert oct_prompts[0] == "An OCT B-scan showing diabetic macular edema."
    assert len(oct_prompts) == 1 + len(kn.find("DME").descriptions)
    assert kn.prompts("rare thing", None, True) == ["An eye image showing rare thing."]


def test_yaml_extends_and_bad_yaml_is_named(tmp_path):
    f = tmp_path / "k.yaml"
    f.write_text(
        "version: clinic-2\ncategories:\n  drusen:\n    aliases: [drusenoid deposits]\n"
        "    descriptions: [yellow deposits under the retina]\n  glaucoma:\n"
        "    descriptions: [notched rim]\ntemplates:\n  Fundus: ['A retinal image of {}.']\n"
    )
    kn = load_knowledge(f)
    assert kn.version == "clinic-2" and kn.find("drusenoid deposits").name == "drusen"
    assert kn.find("glaucoma").descriptions[-1] == "notched rim"
    assert kn.prompts("drusen", "Fundus") == [
        "A retinal image of drusen.",
        "A retinal image of yellow deposits under the retina.",
    ]
    assert default_knowledge().find("drusen") is None  # the built-in dictionary is untouched
    f.write_text("categories:\n  x: [not a mapping]\n")
    with pytest.raises(ConfigError, match="k.yaml: category 'x'"):
        load_knowledge(f)
    f.write_text("templates:\n  OCT: ['no placeholder']\n")
    with pytest.raises(ConfigError, match="exactly one"):
        load_knowledge(f)
    f.write_text("prompts: {}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_knowledge(f)
