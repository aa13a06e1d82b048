from django import forms


class MonthCloseForm(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Needed only to close while a source has failed or is not final; "
        "kept with the close.",
    )


class MonthReopenForm(forms.Form):
    reason = forms.CharField(
        label="Why reopen it",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Kept with the month's history, listed on the report.",
    )
