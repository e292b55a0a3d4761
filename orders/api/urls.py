"""Routes of the storefront API, mounted at /api/v1/."""

from django.urls import path, re_path

from orders.api import views

app_name = "storefront_api"

urlpatterns = [
    path("products/", views.ProductListApi.as_view(), name="product-list"),
    path("orders/", views.OrderListCreateApi.as_view(), name="order-list"),
    # str, not int: an id that is not a number is a 404 in the API's error shape, not Django's page.
    path("orders/<str:order_id>/", views.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<str:order_id>/cancel/", views.OrderCancelApi.as_view(), name="order-cancel"),
    re_path(r"^.*$", views.NotFoundApi.as_view(), name="not-found"),
]
