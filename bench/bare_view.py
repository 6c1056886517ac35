"""The benchmark's reference: a bare DRF view that returns a constant JSON.

Mounted at /api/bench/bare by the bench's own URLconf (bench/urls.py, chosen by bench/settings.py), on the
same server, settings and middleware as the messages endpoint, so scenario 1's ratio is "what the platform
costs per message over what Django + DRF cost per request".
"""

from rest_framework.response import Response
from rest_framework.views import APIView

_BODY = {"success": True, "bench": "bare"}


class BenchBareApi(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        return Response(_BODY)

    def post(self, request):
        return Response(_BODY)
