from django import forms

from billing.importers import IMPORTERS
from billing.models import BillingSource

FORMAT_CHOICES = [("auto", "Detect from the header")] + [
    (
        name,
        BillingSource.Kind(name).label if name in BillingSource.Kind.values else name,
    )
    for name in sorted(IMPORTERS)
]


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV or gzip-compressed CSV, as the provider exports it."
    )
    source = forms.CharField(
        max_length=100,
        help_text="An existing source, or a new name to create one.",
        widget=forms.TextInput(attrs={"list": "source-names", "autocomplete": "off"}),
    )
    file_format = forms.ChoiceField(
        choices=FORMAT_CHOICES, initial="auto", label="Format"
    )

    def clean_source(self) -> str:
        return self.cleaned_data["source"].strip()
