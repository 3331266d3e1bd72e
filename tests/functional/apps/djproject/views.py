"""Views: a form page rendered from a template (with CSRF) and its POST handler."""

from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt


def form(request):
    name = None
    if request.method == "POST":
        name = request.POST.get("name", "")
    return render(request, "form.html", {"name": name})


@csrf_exempt
def api(request):
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "body_length": len(request.body),
            "query": request.GET.dict(),
        }
    )


def hello(request):
    return HttpResponse("hello from django", content_type="text/plain")
