"""The compression stage in the job: one version holds every offered file; the card keeps every attempt."""
import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.urls import reverse

from tests.factories import UserFactory
from training.ml.compress import compression_plan
from training.models import ModelArtifact, ModelVersion, TrainingPolicy, TrainingRun
from training.nightly import compression_config_for, training_run_execute
from training.publishing import StoredFileMismatch

pytestmark = pytest.mark.django_db


def _stored_files(media) -> list[str]:
    return sorted(p.name for p in (media / "models").rglob("*") if p.is_file()) if (media / "models").exists() else []


def test_a_run_publishes_the_float_model_and_every_offered_variant_as_one_version(
    colour_photos, fake_pipeline, fake_compression, _local_storage, api
):
    stages = []
    run = training_run_execute(
        project=colour_photos, trigger=TrainingRun.Trigger.MANUAL,
        on_progress=lambda r: stages.append((r.stage, r.progress)),
    )

    assert run.status == TrainingRun.Status.SUCCEEDED, run.message
    version = ModelVersion.objects.get()
    files = {(a.variant, a.format): a for a in version.artifacts.all()}
    # Offered: fp32 and int8 in both formats; "pruned" lost 5 points (allowed: 1) and is rejected.
    assert set(files) == {("fp32", "onnx"), ("fp32", "pte"), ("int8", "onnx"), ("int8", "pte")}
    assert {key for key, a in files.items() if a.recommended} == {("int8", "onnx"), ("int8", "pte")}
    for fmt in ("onnx", "pte"):  # recommended = the smallest offered file of its format
        smallest = min((a for a in files.values() if a.format == fmt), key=lambda a: a.size)
        assert smallest.recommended
    int8 = files[("int8", "onnx")]
    assert int8.file.name == "models/ants-bees/v1/ants-bees-v1-int8.onnx" and int8.precision == "int8"
    assert int8.measurements["status"] == "offered" and int8.verification == int8.measurements
    assert int8.preprocessing["input_size"] == 8 and int8.companions == []
    # The float model's own metrics and input stay on the version; the card goes with it.
    assert version.metrics["accuracy"] == run.metrics["accuracy"] and version.preprocessing["input_size"] == 8
    assert version.model_card == run.model_card and run.model_card["published"] is True
    rows = {(r["variant"], r["format"]): r for r in run.model_card["variants"]}
    assert rows[("pruned", "onnx")]["status"] == "rejected" and "points below" in rows[("pruned", "onnx")]["reason"]
    # Rejected files are in the card only: not stored, not in the registry, not in the manifest.
    assert _stored_files(_local_storage) == sorted(f"ants-bees-v1-{v}.{f}" for v, f in files)
    manifest = api.get("/api/mobile/v1/models/ants-bees/latest").json()
    assert {(a["variant"], a["format"]) for a in manifest["artifacts"]} == set(files)
    # The stage reported its progress between the gate (95%) and publishing (99%).
    compress_progress = [p for stage, p in stages if stage in ("compress", "measure")]
    assert {"compress", "measure"} <= {stage for stage, _ in stages}
    assert compress_progress and all(0.95 <= p <= 0.99 for p in compress_progress)
    assert run.config["compression"]["max_accuracy_loss"] == 0.01


def test_nothing_offered_publishes_nothing_and_says_why(colour_photos, fake_pipeline, fake_compression, _local_storage):
    fake_compression.failed = {("fp32", "onnx"): "onnxruntime could not load the file",
                               ("fp32", "pte"): "executorch could not load the file"}
    fake_compression.accuracy.update({("int8", "onnx"): 0.5, ("int8", "pte"): 0.5})

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    assert run.status == TrainingRun.Status.UNPUBLISHED == "unpublished"
    assert "onnxruntime could not load the file" in run.message and "executorch could not load" in run.message
    run.refresh_from_db()
    assert run.model_card["published"] is False and len(run.model_card["variants"]) == 5
    assert ModelVersion.objects.count() == 0 and ModelArtifact.objects.count() == 0
    assert _stored_files(_local_storage) == []


def test_a_stored_file_that_reads_back_different_bytes_publishes_nothing(
    colour_photos, fake_pipeline, fake_compression, _local_storage, monkeypatch
):
    real_open = FileSystemStorage._open

    def tampered_open(self, name, mode="rb"):
        # The storage corrupts one file (the fp32 ONNX before it reads back fine).
        if "-int8." in name:
            return ContentFile(b"not the bytes that were measured", name=name)
        return real_open(self, name, mode)

    monkeypatch.setattr(FileSystemStorage, "_open", tampered_open)

    with pytest.raises(StoredFileMismatch):
        training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.FAILED and "StoredFileMismatch" in run.message
    assert ModelVersion.objects.count() == 0 and ModelArtifact.objects.count() == 0
    assert _stored_files(_local_storage) == []  # the files stored before the mismatch are gone too


def test_a_refused_run_does_not_compress(colour_photos, fake_pipeline, fake_compression):
    from tests.training.conftest import photos_in_both_splits, release

    release(colour_photos, labels=["ants", "bees"])
    photos_in_both_splits(colour_photos, label="bees", each=6)  # enough photos to establish the drop
    fake_pipeline.predict = lambda sample: 0  # worse than the release

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    assert run.status == TrainingRun.Status.REFUSED and fake_compression.calls == [] and run.model_card == {}


def test_the_gate_scores_the_release_from_its_fp32_onnx_file(colour_photos, fake_pipeline, fake_compression):
    first = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    assert first.status == TrainingRun.Status.SUCCEEDED
    fp32 = ModelArtifact.objects.get(variant="fp32", format="onnx")

    second = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)

    assert second.gate["outcome"] == "passed" and second.gate["champion"]["artifact_sha256"] == fp32.sha256
    assert second.model_version.version == 2


def test_an_admin_cancel_during_compression_publishes_nothing(colour_photos, fake_pipeline, fake_compression):
    from training.runs import training_run_cancel_request

    def on_progress(run):
        if run.stage == "compress" and not run.cancel_requested:
            training_run_cancel_request(runs=[run])
            run.cancel_requested = True

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL, on_progress=on_progress)

    assert run.status == TrainingRun.Status.CANCELLED and "compress" in run.message
    assert ModelVersion.objects.count() == 0


def test_the_policy_overrides_reach_the_compression_config(colour_photos, fake_pipeline, fake_compression, settings):
    default = compression_config_for(colour_photos)
    assert default.variants == tuple(settings.PLATFORM_COMPRESSION_VARIANTS) and default.max_accuracy_loss == 0.01

    settings.PLATFORM_COMPRESSION_FORMATS = ["onnx"]
    settings.PLATFORM_LATENCY_THREADS = 2
    TrainingPolicy.objects.create(project=colour_photos, compression_variants=["int8", "fp32"],
                                  max_accuracy_loss_points=2.5)
    config = compression_config_for(colour_photos)
    assert config.variants == ("fp32", "int8") and config.max_accuracy_loss == 0.025
    assert config.formats == ("onnx",) and config.latency_threads == 2

    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    assert fake_compression.configs[-1] == config
    assert {(a.variant, a.format) for a in run.model_version.artifacts.all()} == {("fp32", "onnx"), ("int8", "onnx")}
    assert run.config["compression"]["variants"] == ["fp32", "int8"]


@pytest.mark.parametrize(
    ("variants", "points", "field"),
    [(["int8"], None, "compression_variants"), (["fp32", "int4"], None, "compression_variants"),
     (["fp32"], 100.0, "max_accuracy_loss_points"), ([], -1.0, "max_accuracy_loss_points")],
)
def test_the_policy_refuses_unknown_variants_a_missing_fp32_and_points_out_of_range(project, variants, points, field):
    policy = TrainingPolicy(project=project, compression_variants=variants, max_accuracy_loss_points=points)
    with pytest.raises(ValidationError) as caught:
        policy.full_clean()
    assert field in caught.value.message_dict
    valid = TrainingPolicy(project=project, compression_variants=["fp32", "pruned-int8"], max_accuracy_loss_points=0)
    valid.full_clean()


def test_core_ml_is_off_by_default_and_the_policy_turns_it_on(project):
    assert compression_config_for(project).coreml_variants == ()  # no Core ML unless a project asks
    assert compression_config_for(project).offer_unexecuted is False
    wrong = TrainingPolicy(project=project, coreml_variants=["pal4", "pal3"])
    with pytest.raises(ValidationError) as caught:
        wrong.full_clean()
    assert "pal3" in caught.value.message_dict["coreml_variants"][0]
    TrainingPolicy.objects.create(project=project, coreml_variants=["pal4", "fp16"], coreml_offer=True)
    config = compression_config_for(project)
    assert config.coreml_variants == ("fp16", "pal4") and config.offer_unexecuted is True
    assert ("pal4", "mlpackage") in compression_plan(config)


def test_the_admin_version_and_run_pages_show_the_card_and_its_chart(colour_photos, fake_pipeline, admin_client):
    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    version = run.model_version

    page = admin_client.get(reverse("admin:training_modelversion_change", args=[version.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Model card" in html and "pruned" in html and "rejected" in html and "\u2605" in html
    assert "points below the float model" in html
    chart_url = reverse("admin:training_modelversion_card_chart", args=[version.pk])
    assert chart_url in html
    chart = admin_client.get(chart_url)
    assert chart.status_code == 200 and chart["Content-Type"] == "image/png" and chart.content[:4] == b"\x89PNG"
    card = admin_client.get(reverse("admin:training_modelversion_card_json", args=[version.pk]))
    assert card.status_code == 200 and card.json() == version.model_card

    run_page = admin_client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    assert run_page.status_code == 200 and "pruned" in run_page.content.decode()
    run_chart = admin_client.get(reverse("admin:training_trainingrun_card_chart", args=[run.pk]))
    assert run_chart.status_code == 200 and run_chart["Content-Type"] == "image/png"


def test_the_card_chart_and_json_need_staff(colour_photos, fake_pipeline, client):
    run = training_run_execute(project=colour_photos, trigger=TrainingRun.Trigger.MANUAL)
    client.force_login(UserFactory())  # a volunteer
    for url in (
        reverse("admin:training_modelversion_card_chart", args=[run.model_version.pk]),
        reverse("admin:training_modelversion_card_json", args=[run.model_version.pk]),
        reverse("admin:training_trainingrun_card_chart", args=[run.pk]),
        reverse("admin:training_trainingrun_card_json", args=[run.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "login" in response["Location"]


def test_card_text_is_escaped_in_the_admin_table():
    from training.admin import card_html

    card = {"variants": [{"variant": "int8", "format": "onnx", "status": "rejected",
                          "reason": "<script>alert(1)</script>"}], "float": {}, "policy": {}}
    html = card_html(card, chart_url="/chart.png", json_url="/card.json")
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_an_admin_sets_and_clears_the_compression_overrides(project, admin_client):
    url = reverse("admin:training_trainingpolicy_add")
    form = {"project": project.pk, "strategy_override": "", "note": "phones are slow",
            "compression_variants": '["fp32", "int8"]', "max_accuracy_loss_points": "2.5"}
    assert admin_client.post(url, form).status_code == 302
    policy = TrainingPolicy.objects.get()
    assert policy.compression_variants == ["fp32", "int8"] and policy.max_accuracy_loss_points == 2.5

    refused = admin_client.post(url.replace("add", f"{policy.pk}/change"),
                                {**form, "compression_variants": '["int8"]'})
    assert refused.status_code == 200 and "fp32" in refused.content.decode()

    cleared = admin_client.post(url.replace("add", f"{policy.pk}/change"),
                                {**form, "compression_variants": "", "max_accuracy_loss_points": ""})
    assert cleared.status_code == 302, cleared.content.decode()[:2000]
    policy.refresh_from_db()
    assert policy.compression_variants in ([], None) and policy.max_accuracy_loss_points is None
    assert compression_config_for(project).max_accuracy_loss == 0.01
