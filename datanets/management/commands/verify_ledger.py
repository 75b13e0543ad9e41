"""manage.py verify_ledger: walk the hash chain and report the first broken link."""

from django.core.management.base import BaseCommand, CommandError

from datanets.ledger import ledger_verify


class Command(BaseCommand):
    help = "Verify the attribution ledger's hash chain; exit 1 at the first broken link."

    def handle(self, *args, **options):
        checked, broken, why = ledger_verify()
        if broken is not None:
            raise CommandError(
                f"Ledger broken at entry #{broken.sequence} ({broken.event}): {why}. "
                f"{checked} entries before it are intact."
            )
        self.stdout.write(self.style.SUCCESS(f"Ledger intact: {checked} entries, every link verified."))
