from datetime import date

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from reports import closing
from reports.selectors import report_month_or_404, report_scope


class MonthlyReportApi(APIView):
    """The monthly report's JSON, as `/reports/YYYY-MM/report.json` gives it to the
    same person: their teams' spend, or the organisation's for finance and admins; a
    closed month's frozen snapshot with its post-close adjustments."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, month: date) -> Response:
        month = report_month_or_404(month)
        return Response(closing.report_json(month=month, **report_scope(request.user)))
