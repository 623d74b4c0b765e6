"""The product catalog: published product, review and COSING files, ingredient analysis, recommendations."""
