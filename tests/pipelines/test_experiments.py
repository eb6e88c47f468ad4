"""``drus evaluate numerical`` as a library call (drus.pipelines.experiments.numerical_study), on a tiny grid."""

from __future__ import annotations

import json

import pytest

from drus.errors import OptionError
from drus.models.prior import default_prior_path
from drus.pipelines.experiments import OCCLUSION_SEED, SCATTERER_SEED, numerical_study
from drus.sampling.config import ReconstructionConfig, SamplerConfig

needs_prior = pytest.mark.skipif(not default_prior_path().exists(), reason="no shipped prior")


@needs_prior
def test_numerical_study_runs_both_phantoms_and_saves_the_configuration(tmp_path):
    config = ReconstructionConfig(sampler=SamplerConfig(n_samples=2, n_steps=1), device="cpu")
    runs = numerical_study(config=config, realisations=1, size=64, out_dir=tmp_path, progress=False)
    assert [st.phantom for st, _ in runs] == ["occlusion", "scatterer"]
    assert [st.settings["seeds"] for st, _ in runs] == [[OCCLUSION_SEED], [SCATTERER_SEED]]
    for st, files in runs:
        assert [f.name for f in files] == [f"{st.phantom}.{ext}" for ext in ("json", "md", "png")]
        saved = json.loads(files[0].read_text())
        assert ReconstructionConfig.from_dict(saved["settings"]["config"]) == config
    with pytest.raises(FileExistsError, match="--overwrite"):  # earlier results are kept
        numerical_study("occlusion", config=config, realisations=1, size=64, out_dir=tmp_path, progress=False)


def test_numerical_study_names_a_bad_phantom_or_size_before_any_work(tmp_path):
    with pytest.raises(OptionError, match="--phantom: .*'cyst'"):
        numerical_study("cyst", out_dir=tmp_path / "out")
    if default_prior_path().exists():
        with pytest.raises(OptionError, match="--size: 30 is not a multiple of 8"):
            numerical_study("occlusion", config=ReconstructionConfig(device="cpu"), size=30, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
