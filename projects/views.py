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

# The new token's key waits in the session for the one page that shows it.
NEW_KEY = "new_api_token"


@never_cache
@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    """The user's API tokens. A new one's key is shown on the page the creation
    redirects to, once: a reload shows it no more and creates nothing."""
    form = ApiTokenForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        token, key = api_token_create(user=request.user, **form.cleaned_data)
        request.session[NEW_KEY] = {"id": token.pk, "key": key}
        return redirect("account_tokens")
    shown = request.session.pop(NEW_KEY, None)
    tokens = request.user.api_tokens.select_related("project")
    created = tokens.filter(pk=shown["id"]).first() if shown else None
    return render(
        request,
        "projects/api_tokens.html",
        {
            "form": form,
            "tokens": tokens,
            "created": created,
            "key": shown["key"] if created else None,
            "now": timezone.now(),
        },
    )


@login_required
@require_POST
def api_token_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    api_token_revoke(token=token, by=request.user)
    messages.success(
        request,
        f"“{token.name}” ({token.prefix}…) is revoked: requests with it get 401 "
        "from now on.",
    )
    return redirect("account_tokens")
