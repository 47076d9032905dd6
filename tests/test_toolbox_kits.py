"""The toolbox extensions pass the extension kit: a LoRA SFT run with each trains to a finite
loss, reloads, and leaves evaluation data alone."""

from __future__ import annotations

from tunery.testing import ExtensionConformance


class TestAugmentKit(ExtensionConformance):
    extension = "augment"
    options = {"copies": 1}


class TestCurriculumKit(ExtensionConformance):
    extension = "curriculum"
    options = {"pacing": "competence"}


class TestL2spKit(ExtensionConformance):
    extension = "l2sp"


class TestNeftuneKit(ExtensionConformance):
    extension = "neftune"


class TestAdversarialKit(ExtensionConformance):
    extension = "adversarial"
    options = {"eps": 0.05}
