# ContributorPreference moves to accounts (accounts 0002 takes over the same table): state only.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("publishing", "0003_publication"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ContributorPreference")],
            database_operations=[],
        ),
    ]
