import pytest

from visionfm.modalities import IMAGENET_MEAN, canonical_modality, get_modality, list_modalities


def test_eight_canonical_modalities():
    assert list_modalities() == ["Fundus", "OCT", "FFA", "SlitLamp", "Ultrasound", "External", "MRI", "UBM"]


@pytest.mark.parametrize(
    "spelling,name",
    [
        ("SiltLamp", "SlitLamp"),
        ("Silt-Lamp", "SlitLamp"),
        ("Slit Lamp", "SlitLamp"),
        ("slit_lamp", "SlitLamp"),
        ("UltraSound", "Ultrasound"),
        ("B-Ultrasound", "Ultrasound"),
        ("External Eye", "External"),
        ("fundus", "Fundus"),
        ("oct", "OCT"),
        ("ubm", "UBM"),
        ("mri", "MRI"),
        ("ffa", "FFA"),
    ],
)
def test_spellings_fold_onto_one_name(spelling, name):
    assert canonical_modality(spelling) == name
    assert get_modality(spelling).name == name


def test_official_statistics_carried_over():
    assert get_modality("Fundus").mean == (0.4237375, 0.2609461, 0.1284039)
    assert get_modality("SlitLamp").std == (0.2651668, 0.2331159, 0.2390358)
    assert get_modality("UBM").mean == (0.0961109,) * 3
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)


def test_unknown_modality_lists_valid_names():
    with pytest.raises(ValueError, match="unknown modality 'Xray'.*Fundus.*UBM"):
        get_modality("Xray")
