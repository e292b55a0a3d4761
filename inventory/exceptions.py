class UnknownProduct(LookupError):
    def __init__(self, skus: list[str]) -> None:
        super().__init__(f"unknown sku: {', '.join(skus)}")
        self.skus = skus
