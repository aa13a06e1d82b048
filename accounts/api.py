from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView

from accounts.models import Team
from accounts.selectors import team_get_for_user, teams_visible_to


class TeamSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["slug", "name", "cost_centre", "gl_account"]


class TeamListApi(ListAPIView):
    """The teams the caller belongs to; every team for finance and admins."""

    serializer_class = TeamSerializer

    def get_queryset(self):
        return teams_visible_to(self.request.user).order_by("name")


class TeamDetailApi(RetrieveAPIView):
    serializer_class = TeamSerializer

    def get_object(self) -> Team:
        return team_get_for_user(self.request.user, self.kwargs["slug"])
