from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """`Authorization: Bearer <token>`, as scripts and HTTP clients send it; the same
    tokens as `Authorization: Token <token>`."""

    keyword = "Bearer"
