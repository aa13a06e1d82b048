from rest_framework import serializers
from rest_framework.generics import ListAPIView

from projects.selectors import projects_visible_to


class ProjectListApi(ListAPIView):
    class OutputSerializer(serializers.Serializer):
        slug = serializers.CharField()
        name = serializers.CharField()
        team = serializers.CharField(source="team.slug")
        kind = serializers.CharField()
        status = serializers.CharField()
        start_date = serializers.DateField()
        end_date = serializers.DateField()

        class Meta:
            ref_name = "ProjectListItem"

    serializer_class = OutputSerializer

    def get_queryset(self):
        return projects_visible_to(self.request.user).select_related("team")
