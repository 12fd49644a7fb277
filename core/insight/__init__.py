"""Platform insight: business KPIs, Web Vitals, funnels, feature adoption, feedback, A/B tests.

Each module computes its figures from the platform database (read-only) or from eventops'
own tables, stores them with a natural key so reruns replace rather than duplicate, and
records the figures rules alert on in the `metrics` table. See docs/insight.md.
"""
