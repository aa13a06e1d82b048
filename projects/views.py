from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from projects.forms import ApiTokenForm
from projects.models import ApiToken
from projects.tokens import api_token_create, api_token_revoke


@never_cache
@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    """The user's API tokens; a new one's key is on this answer only."""
    form = ApiTokenForm(request.POST or None, user=request.user)
    created = key = None
    if request.method == "POST" and form.is_valid():
        created, key = api_token_create(user=request.user, **form.cleaned_data)
        form = ApiTokenForm(user=request.user)
    tokens = request.user.api_tokens.select_related("project")
    return render(
        request,
        "projects/api_tokens.html",
        {
            "form": form,
            "tokens": tokens,
            "created": created,
            "key": key,
            "now": timezone.now(),
        },
    )


@login_required
@require_POST
def api_token_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    api_token_revoke(token=token, by=request.user)
    messages.success(
        request, f"“{token.name}” is revoked: requests with it get 401 from now on."
    )
    return redirect("account_tokens")
