//! Every route the server answers, by its path template: the router is built from these
//! templates and the metrics count responses by them, so the two cannot disagree.

macro_rules! routes {
    ($($route:ident => $template:literal,)*) => {
        /// A route, or `Other` for a request no route matched.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Route {
            $($route,)*
            Other,
        }

        impl Route {
            pub const ALL: &'static [Route] = &[$(Route::$route,)* Route::Other];

            /// The path template, as the router registers it and the metrics label it.
            pub const fn template(self) -> &'static str {
                match self {
                    $(Route::$route => $template,)*
                    Route::Other => "other",
                }
            }

            /// The route a matched template names (one chain of string comparisons per
            /// request, no allocation); `Other` for anything else.
            pub fn of_template(template: &str) -> Self {
                match template {
                    $($template => Route::$route,)*
                    _ => Route::Other,
                }
            }

            /// Its index in `ALL` (the metrics' arrays).
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

routes! {
    Storefront => "/",
    AdminConsole => "/admin",
    Asset => "/assets/{file}",
    Healthz => "/healthz",
    Readyz => "/readyz",
    Metrics => "/metrics",
    OpenApi => "/api/openapi.json",
    Sales => "/api/v1/sales",
    Sale => "/api/v1/sales/{sale_id}",
    SalePause => "/api/v1/sales/{sale_id}/pause",
    SaleResume => "/api/v1/sales/{sale_id}/resume",
    SaleEnd => "/api/v1/sales/{sale_id}/end",
    SaleCodes => "/api/v1/sales/{sale_id}/codes",
    Purchase => "/api/v1/sales/{sale_id}/purchase",
    Line => "/api/v1/sales/{sale_id}/queue",
    QueueLog => "/api/v1/sales/{sale_id}/queue/log",
    Keys => "/api/v1/keys",
    Audit => "/api/v1/sales/{sale_id}/audit",
    Orders => "/api/v1/orders",
    OrdersCsv => "/api/v1/orders.csv",
    Order => "/api/v1/orders/{order_id}",
    Pay => "/api/v1/orders/{order_id}/pay",
    Cancel => "/api/v1/orders/{order_id}/cancel",
    Refund => "/api/v1/orders/{order_id}/refund",
    StripeWebhook => "/api/v1/payments/stripe/webhook",
    PaymentConfig => "/api/v1/payments/config",
    Time => "/api/v1/time",
    DemoToken => "/api/v1/demo/token",
    Events => "/api/v1/events",
    EventSinks => "/api/v1/events/sinks",
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn every_route_is_found_by_its_template_and_indexes_its_place() {
        for (index, route) in Route::ALL.iter().enumerate() {
            assert_eq!(route.index(), index);
            if *route != Route::Other {
                assert_eq!(Route::of_template(route.template()), *route);
            }
        }
        assert_eq!(Route::of_template("/nowhere"), Route::Other);
    }
}
