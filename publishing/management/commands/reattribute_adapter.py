"""manage.py reattribute_adapter SLUG --method tracin: measure influence again, publish a new version."""

from django.core.management.base import BaseCommand, CommandError

from attribution.aggregation import AGGREGATIONS
from attribution.influence import FINAL_ADAPTER
from modelfactory.exceptions import ApplicationError
from publishing.models import Adapter
from publishing.services import adapter_reattribute


class Command(BaseCommand):
    help = (
        "Compute contributor influence for a published adapter with another method (or projection) and "
        "publish it as a new adapter version with a new signed manifest; the old version stays as it was."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--from-version", type=int, help="the version to start from (default: the latest)")
        parser.add_argument("--method", choices=FINAL_ADAPTER, required=True)  # tracincp is gathered while training
        parser.add_argument("--projection-dim", type=int, default=0, help="CountSketch size; 0: exact if it fits")
        parser.add_argument("--aggregation", choices=list(AGGREGATIONS), help="share rule (default: the job's)")

    def handle(self, *args, slug, from_version, method, projection_dim, aggregation, **options):
        version = from_version
        adapters = Adapter.objects.filter(slug=slug)
        adapter = adapters.filter(version=version).first() if version else adapters.order_by("-version").first()
        if adapter is None:
            raise CommandError(f"No adapter {slug}{f' v{version}' if version else ''}.")

        def show(event):
            if event["event"] == "attributing" and event["done"] == event["total"]:
                self.stdout.write(f"gradients of {event['total']} examples taken")

        try:
            new = adapter_reattribute(
                adapter=adapter, method=method, projection_dim=projection_dim, aggregation=aggregation, progress=show
            )
        except (ApplicationError, ValueError) as error:
            raise CommandError(getattr(error, "message", str(error))) from error
        top = ", ".join(f"{c['id']} {c['share']:.3f}" for c in new.manifest["influence"]["contributors"][:5])
        self.stdout.write(self.style.SUCCESS(f"Published {new.slug} v{new.version} with {method} influence: {top}"))
