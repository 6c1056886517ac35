import config.ids
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('channels_app', '0004_aiagent_provider_choices_from_agent_backends'),
    ]

    operations = [
        migrations.CreateModel(
            name='Team',
            fields=[
                ('id', models.CharField(default=config.ids.team_id, editable=False, max_length=40, primary_key=True, serialize=False)),
                ('name', models.CharField(max_length=200)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('workspace', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='teams', to='channels_app.workspace')),
            ],
            options={
                'ordering': ['name'],
            },
        ),
        migrations.AddField(
            model_name='channel',
            name='team',
            field=models.ForeignKey(blank=True, help_text='The team of the workspace the channel belongs to, if any.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='channels', to='channels_app.team'),
        ),
    ]
