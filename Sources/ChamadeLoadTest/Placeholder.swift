enum LoadTestPlaceholder {}
