from django import forms
from django.contrib.auth import get_user_model

from .models import Datanet


class DatanetForm(forms.ModelForm):
    curators = forms.CharField(
        required=False, help_text="Usernames of people who moderate it besides site staff, comma-separated"
    )

    class Meta:
        model = Datanet
        fields = ["name", "description", "domain_tags", "schema", "license", "visibility", "guidelines"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3}), "guidelines": forms.Textarea(attrs={"rows": 4})}

    def __init__(self, *args, teams=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"] = forms.ModelChoiceField(queryset=teams, help_text="The team that owns it")
        self.order_fields(["team", *self.Meta.fields, "curators"])

    def clean_curators(self):
        names = [name.strip() for name in self.cleaned_data["curators"].split(",") if name.strip()]
        users = list(get_user_model().objects.filter(username__in=names))
        unknown = set(names) - {user.username for user in users}
        if unknown:
            raise forms.ValidationError(f"No such user(s): {', '.join(sorted(unknown))}")
        return users


class UploadForm(forms.Form):
    file = forms.FileField(help_text="JSONL, JSON array, CSV or Parquet")


class InstructionRecordForm(forms.Form):
    instruction = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}))
    input = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    output = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))

    def value(self) -> dict:
        return dict(self.cleaned_data)


class TextRecordForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}))

    def value(self) -> dict:
        return dict(self.cleaned_data)


class ChatRecordForm(forms.Form):
    system = forms.CharField(widget=forms.Textarea(attrs={"rows": 1}), required=False)
    user = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}))
    assistant = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))

    def value(self) -> dict:
        messages = [{"role": role, "content": self.cleaned_data[role]} for role in ("system", "user", "assistant")]
        return {"messages": [m for m in messages if m["content"]]}


class PreferenceRecordForm(forms.Form):
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}))
    chosen = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), help_text="The better answer")
    rejected = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), help_text="The worse answer")

    def value(self) -> dict:
        return dict(self.cleaned_data)


RECORD_FORMS = {
    "instruction": InstructionRecordForm,
    "text": TextRecordForm,
    "chat": ChatRecordForm,
    "preference": PreferenceRecordForm,
}


class AccessRequestForm(forms.Form):
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    def __init__(self, *args, teams=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"] = forms.ModelChoiceField(queryset=teams)
        self.order_fields(["team", "message"])


class AccessDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("grant", "Grant"), ("deny", "Deny")])
    message = forms.CharField(required=False)


class ModerationForm(forms.Form):
    action = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    records = forms.ModelMultipleChoiceField(
        queryset=None, required=True, error_messages={"required": "Select records first."}
    )
    reason = forms.CharField(required=False, max_length=300)

    def __init__(self, *args, queryset=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["records"].queryset = queryset


class PublishForm(forms.Form):
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
