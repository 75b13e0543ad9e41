"""manage.py check_versions: recompute every Datanet version's Merkle root from its records' content."""

from django.core.management.base import BaseCommand, CommandError

from datanets.integrity import versions_check


class Command(BaseCommand):
    help = "Recompute each Datanet version's Merkle root from its records; exit 1 naming every mismatch."

    def handle(self, *args, **options):
        checked, broken = 0, 0
        for version, mismatches in versions_check():
            checked += 1
            for mismatch in mismatches:
                self.stderr.write(f"{version.datanet.slug} v{version.number}: {mismatch}")
            broken += bool(mismatches)
        if broken:
            raise CommandError(f"{broken} of {checked} Datanet versions do not match their records.")
        self.stdout.write(self.style.SUCCESS(f"All {checked} Datanet versions match their records."))
